"""Training errors, and: every message in docs/troubleshooting.md is asserted by a test."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import rasterio

from hsimap.classes import ClassTable
from hsimap.errors import HsimapError
from hsimap.io.labels import load_labels
from hsimap.io.rasters import Grid, write_raster
from hsimap.io.scene import open_scene
from hsimap.workflows.train import TrainOptions, train
from tests.conftest import hsimap

ROOT = Path(__file__).resolve().parents[1]


def test_label_errors(small_scene, tmp_path):
    scene = open_scene(small_scene.scene)
    grid = Grid.from_scene(scene)
    write_raster(tmp_path / "empty.tif", np.zeros((80, 96), "uint8"), grid,
                 class_table=ClassTable([1], ["x"]))
    with pytest.raises(HsimapError, match="no labelled pixels"):
        load_labels(tmp_path / "empty.tif", scene)
    # polygons far from the scene
    import json

    far = {"type": "FeatureCollection", "crs": {"type": "name", "properties":
           {"name": "urn:ogc:def:crs:EPSG::32611"}}, "features": [
        {"type": "Feature", "properties": {"class": "water"}, "geometry": {
            "type": "Polygon", "coordinates": [[[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]]]}}]}
    (tmp_path / "far.geojson").write_text(json.dumps(far))
    with pytest.raises(HsimapError, match="labels do not overlap the scene"):
        load_labels(tmp_path / "far.geojson", scene, class_field="class")
    with pytest.raises(HsimapError, match="--class-field"):
        load_labels(tmp_path / "far.geojson", scene, class_field="nope")


def test_polygons_are_reprojected_and_named(small_scene, tmp_path):
    """Polygons in WGS84 land on the UTM scene; text classes become names."""
    import json

    from rasterio.warp import transform

    scene = open_scene(small_scene.scene)
    t = scene.rio.transform()
    xs, ys = [t.c + 10 * t.a, t.c + 40 * t.a], [t.f + 10 * t.e, t.f + 30 * t.e]
    lon, lat = transform("EPSG:32611", "EPSG:4326", xs, ys)
    ring = [[lon[0], lat[0]], [lon[1], lat[0]], [lon[1], lat[1]], [lon[0], lat[1]],
            [lon[0], lat[0]]]
    fc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"crop": "wheat"},
         "geometry": {"type": "Polygon", "coordinates": [ring]}},
        {"type": "Feature", "properties": {"crop": "barley"},
         "geometry": {"type": "Point", "coordinates": [lon[1], lat[1]]}}]}
    (tmp_path / "fields.geojson").write_text(json.dumps(fc))
    labels, table = load_labels(tmp_path / "fields.geojson", scene, class_field="crop")
    assert table.names == ["barley", "wheat"]
    assert (labels == 2).sum() == pytest.approx(30 * 20, rel=0.1)
    assert (labels == 1).sum() == 1


def test_training_errors(small_scene, tmp_path):
    scene = open_scene(small_scene.scene)
    labels = np.zeros((80, 96), np.int32)
    labels[:10, :10] = 1
    with pytest.raises(HsimapError, match="single class"):
        train(scene, labels, ClassTable([1], ["a"]), tmp_path / "m", TrainOptions(steps=1))
    labels[20:30, 20:30] = 2
    with pytest.raises(HsimapError, match="fewer than the"):
        train(scene, labels, ClassTable([1, 2], ["a", "b"]), tmp_path / "m",
              TrainOptions(steps=1, endmembers=40))
    assert not (tmp_path / "m").exists()


def test_cuda_request_without_gpu():
    import torch

    from hsimap.model.store import resolve_device

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(HsimapError, match="no CUDA GPU"):
        resolve_device("cuda")


def test_wavelength_mismatch(trained, tmp_path):
    from hsimap.synth import SynthSpec, make_scene

    shifted = make_scene(tmp_path / "s.tif", SynthSpec(width=30, height=30, bands=24,
                                                       wavelength_range=(420, 2470)))
    r = hsimap("predict", shifted.scene, "-m", trained.model_dir, "-o", tmp_path / "o")
    assert r.returncode == 1 and "wavelengths differ" in r.stderr
    r = hsimap("predict", shifted.scene, "-m", trained.model_dir, "-o", tmp_path / "o",
               "--ignore-wavelengths", "--quiet", "--no-quicklooks")
    assert r.returncode == 0, r.stderr
    with rasterio.open(tmp_path / "o" / "s_classes.tif") as src:
        assert src.read(1).any()


def test_every_documented_message_is_tested():
    doc = (ROOT / "docs" / "troubleshooting.md").read_text()
    messages = re.findall(r"^\| `([^`]+)`", doc, flags=re.M)
    messages += re.findall(r"^\| `[^`]+` / `([^`]+)`", doc, flags=re.M)
    tests = "".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py")
                    if p.name != "test_errors.py") + Path(__file__).read_text().split(
                        "def test_every_documented")[0]
    assert len(messages) > 10
    untested = [m for m in messages if m not in tests]
    assert untested == []
