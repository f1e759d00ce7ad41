"""Round three (issue 27): one story per run. ``REFUSED``: the input, the one-line message, the
exit code, and what is left on disk (what was there before, byte for byte). The tests after it
check answers that used to be silently wrong."""

from __future__ import annotations

import json
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio

from hsimap.io.scene import open_scene
from tests.conftest import Refused, Trained, copy_model, hsimap, hsimap_process, refused_in_one_line


def weights_of_another_run(d, t):
    """The card of one run beside the weights of another (same shapes): its hash disagrees."""
    from safetensors.torch import load_file, save_file

    m = copy_model(d, t, "m")
    state = load_file(str(m / "model.safetensors"))
    k = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 4)
    state[k] = state[k] * 1.01
    save_file(state, str(m / "model.safetensors"), metadata={"format": "hsimap-model/1"})
    return ["predict", t.made.scene, "-m", m, "-o", d / "out"]


def _gpkg_points(d: Path, t: Trained, values, name="ref.gpkg", field="reference") -> Path:
    import pyogrio
    import shapely

    with rasterio.open(t.made.labels) as src:
        tr = src.transform
    rows = np.arange(20, 20 + 5 * len(values), 5)[:len(values)]
    xs, ys = rasterio.transform.xy(tr, rows, np.full(len(rows), 80), offset="center")
    path = d / name
    pyogrio.raw.write(path, shapely.to_wkb(shapely.points(np.asarray(xs), np.asarray(ys))),
                      [np.asarray(values)], fields=[field], driver="GPKG",
                      geometry_type="Point", crs=open_scene(t.made.scene).rio.crs.to_wkt())
    return path


def _map(d: Path, t: Trained) -> Path:
    out = d / "maps"
    r = hsimap("-q", "predict", t.made.scene, "-m", t.model_dir, "-o", out, "--no-quicklooks")
    assert r.returncode == 0, r.stderr
    return out / "scene_classes.tif"


def reference_id_no_class_knows(d, t):
    cls = _map(d, t)
    ref = _gpkg_points(d, t, np.array([1, 2, 3, 97], np.int32))
    return ["evaluate", cls, "-l", ref, "--class-field", "reference"]


def evaluate_the_map_against_itself(d, t):
    cls = _map(d, t)
    r = hsimap("-q", "sample", cls, "-o", d / "s.gpkg", "--min-per-class", 3, "--target-se",
               0.05)
    assert r.returncode == 0, r.stderr
    return ["evaluate", cls, "-l", d / "s.gpkg", "--class-field", "map_class", "--stratified"]


def _filled_sample(d, t):
    """A sample drawn from the map, its reference filled from the truth (QGIS played)."""
    import pyogrio

    cls = _map(d, t)
    r = hsimap("-q", "sample", cls, "-o", d / "s.gpkg", "--min-per-class", 3, "--target-se",
               0.05)
    assert r.returncode == 0, r.stderr
    meta, _, geom, fields = pyogrio.raw.read(d / "s.gpkg")
    return cls, meta, geom, dict(zip(meta["fields"], fields, strict=True))


def evaluate_a_sample_with_a_moved_point(d, t):
    import pyogrio
    import shapely

    cls, meta, geom, f = _filled_sample(d, t)
    pts = shapely.from_wkb(geom)
    pts[0] = shapely.Point(shapely.get_x(pts[0]) + 30.0, shapely.get_y(pts[0]))  # snapped
    f["reference"] = np.asarray(f["map_class"], np.int32)   # labelled
    info = pyogrio.read_info(d / "s.gpkg")
    pyogrio.raw.write(d / "s.gpkg", shapely.to_wkb(pts), [f[k] for k in meta["fields"]],
                      fields=list(meta["fields"]), driver="GPKG", geometry_type="Point",
                      crs=meta["crs"], layer_metadata=info["layer_metadata"])
    return ["evaluate", cls, "-l", d / "s.gpkg", "--class-field", "reference", "--stratified"]


def sample_a_map_with_a_one_pixel_class(d, t):
    cls = _map(d, t)
    with rasterio.open(cls, "r+") as dst:
        m = dst.read(1)
        ids = [int(v) for v in np.unique(m) if v]
        m[m == ids[-1]] = ids[0]
        r, c = np.argwhere(m > 0)[0]
        m[r, c] = ids[-1]        # one pixel left of the last class
        dst.write(m, 1)
    return ["sample", cls, "-o", d / "s.gpkg"]


def undeclared_fill_value(d, t):
    from hsimap.io.rasters import Grid, write_raster

    scene = open_scene(t.made.scene)
    v = np.nan_to_num(scene.values.astype(np.float32), nan=-9999.0)
    v[:, :20, :] = -9999.0
    path = write_raster(d / "fill.tif", v, Grid.from_scene(scene), nodata=None)
    return ["predict", path, "-m", t.model_dir, "-o", d / "out"]


def evaluate_png_onto_its_truth(d, t):
    truth = d / "truth.tif"
    shutil.copy(t.made.labels, truth)
    return ["evaluate", _map(d, t), "-l", truth, "--png", truth, "--overwrite"]


def suggest_onto_its_labels(d, t):
    ref = _gpkg_points(d, t, np.array([1, 2, 3, 4], np.int32), name="refs.gpkg")
    return ["suggest", t.made.scene, "-m", t.model_dir, "-l", ref, "-o", ref, "--overwrite",
            "-n", 3]


def library_without_positive_values(d, t):
    from hsimap.io.speclib import write_library

    wl = open_scene(t.made.scene).coords["wavelength"].values
    write_library(d / "lib", -np.ones((3, len(wl)), np.float32), ["a", "b", "c"], wl)
    return ["unmix", t.made.scene, "-o", d / "out", "--library", d / "lib.sli"]


def suggest_a_scene_of_another_sensor(d, t):
    from hsimap.synth import SynthSpec, make_scene

    made = make_scene(d / "other.tif", SynthSpec(width=64, height=64, bands=30, seed=2))
    for p in (made.labels, made.abundances):
        Path(p).unlink()
    for p in d.glob("other_endmembers*"):
        p.unlink()
    return ["suggest", made.scene, "-m", t.model_dir, "-o", d / "next.gpkg"]


Case = Refused


REFUSED = [
    Case("weights of another run under a card", weights_of_another_run,
         "its weights are not the ones its model.json describes"),
    Case("reference id no class table knows", reference_id_no_class_knows,
         "reference class id 97 is no class of the map"),
    Case("evaluate --class-field map_class (the map against itself)",
         evaluate_the_map_against_itself, "holds the map's own class"),
    Case("a sample whose point was moved in QGIS", evaluate_a_sample_with_a_moved_point,
         "its points are not the ones `hsimap sample` drew"),
    Case("sample of a map with a one-pixel class", sample_a_map_with_a_one_pixel_class,
         "a stratified estimate needs 2 or more in every class"),
    Case("sample --expected-ua nan", lambda d, t: ["sample", _map(d, t), "-o", d / "s.gpkg",
                                                   "--expected-ua", "nan"],
         "user's accuracies must be in (0, 1], got nan"),
    Case("an undeclared -9999 fill value", undeclared_fill_value,
         "a fill value it does not declare as nodata"),
    Case("evaluate --png onto the ground truth", evaluate_png_onto_its_truth,
         "is one of this command's inputs; name another --png"),
    Case("suggest -o onto its own labels", suggest_onto_its_labels,
         "is one of this command's inputs; name another -o"),
    Case("unmix --library of negative spectra", library_without_positive_values,
         "has no positive value"),
    Case("suggest -m on a scene of another sensor", suggest_a_scene_of_another_sensor,
         "scene has 30 bands, the model was trained on 24"),
    Case("train --patience -1 (issue 30)",
         lambda d, t: ["train", t.made.scene, "-l", t.made.labels, "-o", d / "m",
                       "--patience", "-1"], "--patience must be 0 or more, got -1"),
]


@pytest.mark.parametrize("case", REFUSED, ids=[c.name for c in REFUSED])
def test_refused(case: Case, trained: Trained, tmp_path: Path):
    refused_in_one_line(case.build(tmp_path, trained), case.message, case.code, tmp_path)


# ---- right answers --------------------------------------------------------------------------

def test_stratified_estimates_of_a_class_the_map_lacks_are_undefined(trained, tmp_path):
    """A reference class the map never shows: its user's accuracy is 0/0, printed "-", null in
    JSON, empty in CSV; never 0.0000 +- 0.0000."""
    cls = _map(tmp_path, trained)
    with rasterio.open(cls) as src:
        m = src.read(1)
    shown = sorted(int(v) for v in np.unique(m) if v)
    missing = [c for c in trained.model.class_table.ids if c not in shown]
    # a map without one of its classes: that class's pixels become another's
    m2 = m.copy()
    gone = shown[0] if not missing else missing[0]
    m2[m2 == gone] = shown[-1]
    with rasterio.open(cls, "r+") as dst:
        dst.write(m2, 1)
    import pyogrio
    import shapely

    with rasterio.open(trained.made.labels) as src:
        truth, tr = src.read(1), src.transform
    rng = np.random.default_rng(0)
    pts, refs = [], []
    for c in shown:
        if c == gone:
            continue
        r, cc = np.nonzero((m2 == c) & (truth > 0))
        pick = rng.choice(len(r), 6, replace=False)
        for i in pick:
            x, y = rasterio.transform.xy(tr, r[i], cc[i], offset="center")
            pts.append(shapely.Point(x, y))
            refs.append(int(truth[r[i], cc[i]]))
    ref = tmp_path / "ref.gpkg"
    pyogrio.raw.write(ref, shapely.to_wkb(np.array(pts, dtype=object)),
                      [np.array(refs, np.int32)], fields=["reference"], driver="GPKG",
                      geometry_type="Point", crs=open_scene(trained.made.scene).rio.crs.to_wkt())
    r = hsimap("-q", "evaluate", cls, "-l", ref, "--class-field", "reference", "--stratified",
               "--json")
    assert r.returncode == 0, r.stderr
    row = next(c for c in json.loads(r.stdout)["classes"] if c["id"] == gone)
    assert row["adjusted_users_accuracy"] is None
    assert row["adjusted_users_accuracy_ci95"] is None
    r = hsimap("-q", "evaluate", cls, "-l", ref, "--class-field", "reference", "--stratified",
               "--csv", tmp_path / "r.csv")
    assert r.returncode == 0, r.stderr
    name = trained.model.class_table.name_of(gone)
    line = next(ln for ln in r.stdout.splitlines()[3:] if ln.startswith(name) and "+-" in ln)
    assert line.rstrip().endswith(" -")   # the user's accuracy column: undefined
    import csv

    rows = list(csv.DictReader((tmp_path / "r.csv").open()))
    assert next(x for x in rows if int(x["id"]) == gone)["adjusted_users_accuracy"] == ""


def test_reference_values_empty_or_typed_as_text(trained, tmp_path):
    """Empty reference points are counted and left out with one warning; a text field of
    digits holds class ids, not names to number in sort order."""
    from hsimap.io.labels import load_labels

    scene = open_scene(trained.made.scene)
    with pytest.warns(UserWarning, match=r"2 of 5 features have no value"):
        lab, _ = load_labels(_gpkg_points(tmp_path, trained,
                                          np.array([1.0, np.nan, 2.0, np.nan, 10.0])), scene,
                             partial=True)
    assert sorted(int(v) for v in np.unique(lab) if v) == [1, 2, 10]
    lab, table = load_labels(_gpkg_points(tmp_path, trained,
                                          np.array(["2", "10", "1", ""], dtype=object),
                                          name="text.gpkg"), scene, partial=True)
    assert table.ids == [1, 2, 10]   # "2" is class 2, "10" class 10


def test_an_empty_point_is_skipped_as_a_null_one(trained, tmp_path):
    import pyogrio
    import shapely

    from hsimap.io.labels import load_labels

    ok = _gpkg_points(tmp_path, trained, np.array([3, 4], np.int32))
    meta, _, geom, fields = pyogrio.raw.read(ok)
    geoms = [*shapely.from_wkb(geom), shapely.Point()]   # POINT EMPTY, as QGIS leaves it
    path = tmp_path / "edited.gpkg"
    pyogrio.raw.write(path, shapely.to_wkb(np.array(geoms, dtype=object)),
                      [np.array([3, 4, 1], np.int32)], fields=["reference"], driver="GPKG",
                      geometry_type="Point", crs=meta["crs"])
    lab, table = load_labels(path, open_scene(trained.made.scene), partial=True)
    assert table.ids == [3, 4]


def test_uint32_ids_above_2_31_keep_their_value(trained, tmp_path):
    import pyogrio

    with rasterio.open(trained.made.labels) as src:
        lab, profile = src.read(1).astype(np.uint32), src.profile
    big = np.uint32(3_000_000_000)
    lab[lab == 1] = big
    profile.update(dtype="uint32", nodata=0)
    path = tmp_path / "u32.tif"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(lab, 1)
    r = hsimap("-q", "vectorize", path, "-o", tmp_path / "v.gpkg")
    assert r.returncode == 0, r.stderr
    ids = pyogrio.read_dataframe(tmp_path / "v.gpkg")["class_id"] if False else \
        pyogrio.raw.read(tmp_path / "v.gpkg", columns=["class_id"])[3][0]
    assert int(big) in set(int(v) for v in ids)
    r = hsimap("-q", "sample", path, "-o", tmp_path / "s.gpkg", "--min-per-class", 5,
               "--target-se", 0.05)
    assert r.returncode == 0, r.stderr
    got = pyogrio.raw.read(tmp_path / "s.gpkg", columns=["map_class"])[3][0]
    assert int(big) in set(int(v) for v in got)


def test_a_closed_pipe_ends_a_command_quietly_with_its_work_done(trained, tmp_path):
    """``hsimap predict ... 2>&1 | head -c 1``: the reader goes away; the run completes."""
    import subprocess
    import sys

    out = tmp_path / "out"
    p = subprocess.Popen([sys.executable, "-m", "hsimap", "predict", trained.made.scene, "-m",
                          trained.model_dir, "-o", out, "--no-quicklooks"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    p.stdout.read(1)
    p.stdout.close()          # the reader is gone
    assert p.wait(timeout=120) == 0
    assert (out / "scene_classes.tif").exists()


def test_endmember_names_are_one_string_in_every_file(trained, tmp_path):
    """The abundance bands, the .sli header, the CSV and the card: the same names."""
    import csv

    import spectral

    out = tmp_path / "out"
    r = hsimap("-q", "predict", trained.made.scene, "-m", trained.model_dir, "-o", out,
               "--no-quicklooks")
    assert r.returncode == 0, r.stderr
    with rasterio.open(out / "scene_abundances.tif") as src:
        bands = list(src.descriptions)
    sli = spectral.envi.open(str(out / "scene_endmembers.hdr"), str(out / "scene_endmembers.sli"))
    header = list(sli.names)
    row = next(csv.reader((out / "scene_endmembers.csv").open()))[1:]
    assert bands == header == row == trained.model.endmember_names
    from hsimap.model.naming import endmember_names

    # A weak match names its nearest spectrum after a ';', never a ','.
    far = endmember_names(np.random.default_rng(0).random((2, 24)),
                          open_scene(trained.made.scene).coords["wavelength"].values)
    assert all("," not in n for n in far)


def test_interrupted_train_overwrite_keeps_the_previous_model(trained, tmp_path):
    m = copy_model(tmp_path, trained, "m")
    before = {p.name: p.read_bytes() for p in m.iterdir()}
    p = hsimap_process("train", trained.made.scene, "-l", trained.made.labels, "-o", m,
                       "--overwrite", "--steps", 100000, "--hidden", 16, "--window", 32,
                       "--halo", 4, "--val-every", 1, "--patience", 0)  # no early stop
    deadline = time.monotonic() + 120
    seen = ""
    while "train:" not in seen:
        assert p.poll() is None and time.monotonic() < deadline, seen
        seen += p.stderr.read(1)
    time.sleep(2)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    last = [ln for ln in err.splitlines() if ln.strip()][-1]
    assert "interrupted at step" in last and "previous model" in last, err
    assert {q.name: q.read_bytes() for q in m.iterdir()} == before


def test_a_long_legal_scene_name_predicts(trained, tmp_path):
    """225 characters: every output name fits 255 bytes; staging names are cut to fit too."""
    name = "f" * 221 + ".tif"
    scene = tmp_path / name
    shutil.copy(trained.made.scene, scene)
    out = tmp_path / "out"
    r = hsimap("-q", "predict", scene, "-m", trained.model_dir, "-o", out, "--probabilities")
    assert r.returncode == 0, r.stderr
    assert (out / ("f" * 221 + "_probabilities.qml")).exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_point_and_polygon_layers_open_styled(trained, tmp_path):
    """sample, suggest and vectorize GeoPackages carry a default QGIS style (the layer_styles
    table QGIS reads), GeoPackage 1.2, and hsimap's readers still find the features."""
    import sqlite3
    import xml.etree.ElementTree as ET

    import pyogrio

    cls = _map(tmp_path, trained)
    runs = {"s.gpkg": ["sample", cls, "--min-per-class", 3, "--target-se", 0.05],
            "n.gpkg": ["suggest", trained.made.scene, "-m", trained.model_dir, "-n", 5],
            "v.gpkg": ["vectorize", cls]}
    for name, args in runs.items():
        r = hsimap("-q", *args, "-o", tmp_path / name)
        assert r.returncode == 0, r.stderr
        with sqlite3.connect(tmp_path / name) as db:
            assert db.execute("PRAGMA user_version").fetchone()[0] == 10200
            (layer, default, qml), = db.execute(
                "SELECT f_table_name, useAsDefault, styleQML FROM layer_styles").fetchall()
        assert layer == Path(name).stem and default == 1
        root = ET.fromstring(qml.split("\n", 1)[1])
        assert root.tag == "qgis" and root.find("renderer-v2") is not None
        layers = [str(n) for n, _ in pyogrio.list_layers(tmp_path / name)]
        assert layers[0] == Path(name).stem
    # the polygons' categories are the map's classes, with their names
    with sqlite3.connect(tmp_path / "v.gpkg") as db:
        qml = db.execute("SELECT styleQML FROM layer_styles").fetchone()[0]
    cats = ET.fromstring(qml.split("\n", 1)[1]).iter("category")
    assert {c.get("label") for c in cats} <= set(trained.model.class_table.names)
    # and the readers take the sample's features, not the style table, without a word
    import warnings

    from hsimap.io.labels import load_labels

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lab, _ = load_labels(tmp_path / "s.gpkg", open_scene(cls), class_field="map_class",
                             partial=True)
    assert not [w for w in caught if "layer" in str(w.message)]
    assert (lab > 0).sum() > 5


def test_a_one_pixel_strip_is_read_in_windows_of_a_windows_area(trained, tmp_path):
    """A 1 x 3000 px strip: one read window (a window's area, 64 x 64 = 4096 px long), not 63
    windows of 1 x 64 px each paying a window's fixed cost (a tenth of the rate per pixel)."""
    from hsimap.synth import SynthSpec, make_scene

    made = make_scene(tmp_path / "strip.tif", SynthSpec(width=3000, height=1, bands=24,
                                                        endmembers=4, classes=4, seed=5))
    r = hsimap("-q", "predict", made.scene, "-m", trained.model_dir, "-o", tmp_path / "out",
               "--no-quicklooks", "--ignore-scale", "--ignore-wavelengths")
    assert r.returncode == 0, r.stderr
    assert "(1 windows)" in r.stdout.splitlines()[0] or ", 1 windows)" in r.stdout
    with rasterio.open(tmp_path / "out" / "strip_classes.tif") as src:
        assert (src.read(1) > 0).all()


def test_class_names_are_compared_one_way_everywhere():
    """One normalisation (case, surrounding and repeated spaces aside) for every match by
    name: labels against a CSV, a reference against a map, flight lines, expected accuracies."""
    from hsimap.classes import ClassTable, name_key

    assert name_key("  Low   Vegetation ") == name_key("low vegetation")
    target = ClassTable([3, 7], ["Low vegetation", "Roof"])
    labels = np.array([[0, 1, 2], [2, 1, 0]])
    got = target.renumber_by_name(labels, {1: "ROOF ", 2: " low  vegetation"}, "ref")
    assert got.tolist() == [[0, 7, 3], [3, 7, 0]]
    with pytest.raises(Exception, match="'Tree' are not among"):
        target.renumber_by_name(labels, {1: "Tree", 2: "Roof"}, "ref")
