"""Several flight lines, one model (issue 14): labels paired with scenes in order, or one
vector file for all; one split over all scenes, written per scene; the card lists them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

from hsimap.classes import Split
from hsimap.io.classmaps import read_class_table
from hsimap.synth import SynthSpec, make_scene
from tests.conftest import hsimap

FAST = ["--steps", 3, "--hidden", 16, "--window", 32, "--halo", 4, "--val-every", 3,
        "--train-per-class", 10, "--val-per-class", 4, "--quiet"]


def _line(d: Path, name: str, x0: float, keep: list[int]):
    """A 64 x 48 px line at easting ``x0`` whose labels keep only the classes in ``keep``."""
    made = make_scene(d / f"{name}.tif", SynthSpec(width=64, height=48, bands=16, endmembers=4,
                                                   classes=4, region_size=16, seed=5,
                                                   origin=(x0, 4100000.0)))
    with rasterio.open(made.labels, "r+") as dst:
        lab = dst.read(1)
        lab[~np.isin(lab, keep)] = 0
        dst.write(lab, 1)
    return made


@pytest.fixture(scope="module")
def lines(tmp_path_factory):
    d = tmp_path_factory.mktemp("lines")
    return d, _line(d, "line_a", 500000.0, [1, 2]), _line(d, "line_b", 500200.0, [2, 3, 4])


def test_two_lines_each_with_some_classes_train_one_model(lines):
    d, a, b = lines
    out = d / "model"
    r = hsimap("train", a.scene, b.scene, "-l", a.labels, "-l", b.labels, "-o", out, *FAST)
    assert r.returncode == 0, r.stderr
    card = json.loads((out / "model.json").read_text())
    assert card["scenes"] == [str(a.scene), str(b.scene)]
    names = read_class_table(a.labels).names + read_class_table(b.labels).names
    assert sorted(card["classes"]["names"]) == sorted(set(names))
    assert len(card["classes"]["ids"]) == 4          # classes 1-2 from A, 2-4 from B
    assert not (out / "split.tif").exists()
    splits = {}
    for made in (a, b):
        with rasterio.open(out / f"split_{made.scene.stem}.tif") as src:
            splits[made.scene.stem] = src.read(1)
            with rasterio.open(made.scene) as scene:
                assert src.transform == scene.transform and src.crs == scene.crs
    # One split over both lines: class 2, labelled in both, gets 10 training pixels in all.
    ids = {n: i for i, n in zip(card["classes"]["ids"], card["classes"]["names"], strict=True)}
    both = 0
    for made in (a, b):
        with rasterio.open(made.labels) as src:
            lab, table = src.read(1), read_class_table(made.labels)
        s = splits[made.scene.stem]
        two = lab == table.ids[table.names.index(names[1])]
        both += int((s[two] == Split.TRAIN).sum())
        assert set(np.unique(s[lab == 0])) == {0}
    assert both == 10
    assert card["protocol"]["pixels"]["train"] == 40
    # The model maps both lines.
    for made in (a, b):
        r = hsimap("predict", made.scene, "-m", out, "-o", d / "maps", "--quiet",
                   "--no-quicklooks")
        assert r.returncode == 0, r.stderr
    assert {ids[n] for n in names} <= set(card["classes"]["ids"])


def test_one_vector_file_covers_both_lines(lines):
    d, a, b = lines
    features = []
    for x0, crop in ((500010, "wheat"), (500060, "maize"), (500210, "maize"),
                     (500260, "rye")):
        ring = [[x0, 4099990], [x0 + 30, 4099990], [x0 + 30, 4099940], [x0, 4099940],
                [x0, 4099990]]
        features.append({"type": "Feature", "properties": {"crop": crop},
                         "geometry": {"type": "Polygon", "coordinates": [ring]}})
    vec = d / "fields.geojson"
    vec.write_text(json.dumps({"type": "FeatureCollection", "crs": {
        "type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32611"}},
        "features": features}))
    out = d / "model_vec"
    r = hsimap("train", a.scene, b.scene, "-l", vec, "--class-field", "crop", "-o", out, *FAST)
    assert r.returncode == 0, r.stderr
    card = json.loads((out / "model.json").read_text())
    assert card["classes"]["names"] == ["maize", "rye", "wheat"]
    for made in (a, b):
        assert (out / f"split_{made.scene.stem}.tif").exists()


@pytest.mark.parametrize("args, message", [
    (lambda a, b: [a.scene, b.scene, "-l", a.labels],
     "2 scenes and one -l"),
    (lambda a, b: [a.scene, b.scene, "-l", a.labels, "-l", b.labels, "-l", a.labels],
     "2 scene(s) but 3 -l"),
])
def test_labels_that_do_not_pair_with_the_scenes_are_refused(lines, args, message):
    d, a, b = lines
    r = hsimap("train", *args(a, b), "-o", d / "refused", *FAST)
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert not (d / "refused").exists()


def test_scenes_with_other_bands_are_refused(lines, tmp_path):
    d, a, _ = lines
    other = make_scene(tmp_path / "other.tif", SynthSpec(width=40, height=30, bands=12,
                                                        endmembers=4, classes=4, seed=6))
    r = hsimap("train", a.scene, other.scene, "-l", a.labels, "-l", other.labels, "-o",
               tmp_path / "model", *FAST)
    assert r.returncode == 1, r.stderr
    assert "other: 12 bands, line_a 16; scenes of one model need the same bands" in r.stderr
    assert not (tmp_path / "model").exists()
