"""Options no other test ran: --train-fraction, --name-library, --ignore-scale's success path,
batch --scheduler with --list and --vrt, and vectorizing a map in a geographic CRS."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio

from hsimap.synth import SynthSpec, make_scene
from tests.conftest import hsimap

FAST = ["--steps", 3, "--hidden", 16, "--window", 32, "--halo", 4, "--val-every", 3,
        "--quiet"]


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    d = tmp_path_factory.mktemp("opts")
    return make_scene(d / "field.tif", SynthSpec(width=64, height=48, bands=16, endmembers=4,
                                                 classes=4, region_size=16, seed=8))


def test_train_fraction_takes_that_share_of_each_class(scene, tmp_path):
    out = tmp_path / "m"
    r = hsimap("train", scene.scene, "-l", scene.labels, "-o", out, "--train-fraction", 0.25,
               *FAST)
    assert r.returncode == 0, r.stderr
    card = json.loads((out / "model.json").read_text())
    assert card["protocol"]["train_fraction"] == 0.25
    with rasterio.open(out / "split.tif") as s, rasterio.open(scene.labels) as lab:
        split, labels = s.read(1), lab.read(1)
    for c in np.unique(labels[labels > 0]):
        n = (labels == c).sum()
        assert (split[labels == c] == 1).sum() == max(1, round(0.25 * n))


def test_name_library_names_the_endmembers_from_it(scene, tmp_path):
    out = tmp_path / "m"
    r = hsimap("train", scene.scene, "-l", scene.labels, "-o", out, "--name-library",
               scene.library, *FAST)
    assert r.returncode == 0, r.stderr
    names = json.loads((out / "model.json").read_text())["endmember_names"]
    assert all(any(true in n for true in scene.endmember_names) for n in names), names


def test_ignore_scale_predicts_a_scene_in_other_units(trained, tmp_path):
    with rasterio.open(trained.made.scene) as src:
        profile, data = src.profile, src.read()
    profile.update(dtype="float32")
    big = tmp_path / "x10000.tif"
    with rasterio.open(big, "w", **profile) as dst:
        dst.write(data.astype(np.float32) * 10_000)
    refused = hsimap("-q", "predict", big, "-m", trained.model_dir, "-o", tmp_path / "no")
    assert refused.returncode == 1 and "--ignore-scale" in refused.stderr
    assert not (tmp_path / "no").exists()
    r = hsimap("-q", "predict", big, "-m", trained.model_dir, "-o", tmp_path / "yes",
               "--ignore-scale", "--no-quicklooks")
    assert r.returncode == 0, r.stderr
    with rasterio.open(tmp_path / "yes" / "x10000_classes.tif") as src:
        assert src.read(1).any()


@pytest.mark.timeout(600)
def test_batch_on_an_existing_cluster_from_a_list_with_a_mosaic(trained, tmp_path):
    from affine import Affine
    from distributed import LocalCluster

    lines = []
    for i in range(2):   # two lines side by side on one grid
        made = make_scene(tmp_path / f"line{i}.tif",
                          SynthSpec(width=40, height=32, bands=24, endmembers=4, classes=4,
                                    seed=30 + i, region_size=16))
        with rasterio.open(made.scene, "r+") as dst:
            t = dst.transform
            dst.transform = Affine(t.a, 0, t.c + i * 40 * t.a, 0, t.e, t.f)
        lines.append(made.scene)
    listing = tmp_path / "scenes.txt"
    listing.write_text("".join(f"{p}\n" for p in lines))
    out = tmp_path / "out"
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster:
        r = hsimap("-q", "batch", "--list", listing, "-m", trained.model_dir, "-o", out,
                   "--scheduler", cluster.scheduler_address, "--vrt", "--no-quicklooks")
    assert r.returncode == 0, r.stderr
    assert "2 done, 0 failed" in r.stdout
    vrt = out / "classes_mosaic.vrt"
    with rasterio.open(vrt) as src:
        assert (src.width, src.height) == (80, 32)
        mosaic = src.read(1)
    for i, p in enumerate(lines):
        with rasterio.open(out / p.stem / f"{p.stem}_classes.tif") as src:
            assert np.array_equal(mosaic[:, 40 * i:40 * (i + 1)], src.read(1))
    assert vrt.with_suffix(".qml").exists()


def test_vectorize_in_a_geographic_crs_gives_the_areas_of_the_class_map(tmp_path):
    import pyogrio

    from hsimap.io.areas import mapped_area

    classes = np.zeros((60, 80), np.uint8)
    classes[5:30, 10:50] = 1
    classes[30:55, 20:70] = 2
    path = tmp_path / "geo_classes.tif"
    with rasterio.open(path, "w", driver="GTiff", width=80, height=60, count=1, dtype="uint8",
                       nodata=0, crs="EPSG:4326",
                       transform=rasterio.transform.from_origin(12.0, 60.0, 0.001, 0.001)) as d:
        d.write(classes, 1)
    out = tmp_path / "geo.gpkg"
    r = hsimap("vectorize", path, "-o", out)
    assert r.returncode == 0, r.stderr
    _, _, _, fields = pyogrio.raw.read(out, columns=["class_id", "area_ha"])
    ids, ha = fields
    expected = mapped_area(path, [1, 2]).hectares
    for k, c in enumerate((1, 2)):
        got = float(np.sum(ha[ids == c]))
        assert got == pytest.approx(expected[k], rel=1e-3)
    # At 60 degrees north a 0.001 degree pixel is about 55.8 x 111.4 m.
    assert expected[0] / (25 * 40) == pytest.approx(0.0558 * 0.1114 * 100, rel=0.01)


def test_train_offers_exactly_the_classifiers_its_options_accept():
    """click needs the choices where the command is declared, without importing numba for
    every command: the list there must be the options' own (CHOICES), name for name."""
    from hsimap.cli.train import command
    from hsimap.workflows.train_options import CHOICES

    option = next(p for p in command.params if p.name == "classifier")
    assert tuple(option.type.choices) == CHOICES
