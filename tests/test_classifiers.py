"""The baselines inside hsimap (``train --classifier svm|rf|auto``): stored arrays that
predict as scikit-learn does, the same output set as the Mamba's (less what needs unmixing),
loaded back by predict and batch, and ``auto`` keeping whichever validates better."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio

from hsimap.classes import ClassTable
from hsimap.io.labels import load_labels
from hsimap.io.rasters import Grid, write_raster
from hsimap.io.scene import open_scene
from hsimap.model.baselines import PixelClassifier, to_arrays
from hsimap.model.baselines import _platt as platt
from hsimap.model.store import load_model
from hsimap.workflows.classifiers import choose
from hsimap.workflows.train import TrainOptions, train
from tests.conftest import Trained, hsimap

FAST = dict(steps=10, hidden=32, window=64, halo=8, val_every=5, progress=False, threads=2)


def _blobs(k: int, seed: int = 0, n: int = 40, bands: int = 12, spread: float = 0.3):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(k), n)
    x = rng.random((n * k, bands)) + y[:, None] * spread
    return x, y, rng.random((2000, bands)) + spread * k / 2


@pytest.mark.parametrize("k", [2, 3, 6])
def test_stored_svm_predicts_as_scikit_learn(k):
    from sklearn.svm import SVC

    x, y, xt = _blobs(k)
    m = SVC(C=10.0, gamma=1.0).fit(x, y)
    clf = PixelClassifier("svm", to_arrays("svm", m, platt(x, y, {"C": 10.0, "gamma": 1.0}, 0)),
                          k)
    assert clf.check(x.shape[1]) is None
    cls, prob = clf.predict(xt)
    # The class is the most probable one (libsvm's svm_predict_probability); sklearn's votes
    # agree nearly everywhere.
    np.testing.assert_array_equal(cls, prob.argmax(1))
    np.testing.assert_allclose(prob.sum(1), 1.0, atol=1e-5)
    assert (m.predict(xt) == cls).mean() > 0.95
    with warnings.catch_warnings():  # SVC(probability=True) is deprecated since sklearn 1.9
        warnings.simplefilter("ignore", FutureWarning)
        ref = SVC(C=10.0, gamma=1.0, probability=True, random_state=0).fit(x, y)
        ref_platt = (np.asarray(ref.probA_), np.asarray(ref.probB_))
    # With libsvm's own sigmoids, the coupled probabilities are libsvm's.
    same = PixelClassifier("svm", to_arrays("svm", ref, ref_platt), k)
    same_cls, same_prob = same.predict(xt)
    np.testing.assert_allclose(same_prob, ref.predict_proba(xt), atol=1e-5)
    sure = np.sort(same_prob, 1)[:, -1] - np.sort(same_prob, 1)[:, -2] > 1e-4
    np.testing.assert_array_equal(same_cls[sure], ref.predict_proba(xt).argmax(1)[sure])
    # Platt's sigmoids fitted here, on cross-validation folds of their own: close, not equal.
    assert np.abs(prob - ref.predict_proba(xt)).mean() < 0.02


@pytest.mark.parametrize("k", [2, 4])
def test_stored_forest_predicts_as_scikit_learn(k):
    from sklearn.ensemble import RandomForestClassifier

    x, y, xt = _blobs(k, seed=1)
    m = RandomForestClassifier(40, random_state=0).fit(x, y)
    clf = PixelClassifier("rf", to_arrays("rf", m), k)
    assert clf.check(x.shape[1]) is None
    xt = xt.astype(np.float32)
    cls, prob = clf.predict(xt)
    np.testing.assert_array_equal(cls, m.predict(xt))
    np.testing.assert_allclose(prob, m.predict_proba(xt), atol=1e-6)


def test_a_damaged_forest_cannot_hang_prediction():
    from sklearn.ensemble import RandomForestClassifier

    x, y, xt = _blobs(3)
    arrays = to_arrays("rf", RandomForestClassifier(3, random_state=0).fit(x, y))
    root = int(arrays["roots"][0])
    arrays["left"][root] = root        # a loop: the root is its own child
    arrays["right"][root] = root
    cls, _ = PixelClassifier("rf", arrays, 3).predict(xt[:5].astype(np.float32))
    assert len(cls) == 5


def test_choose_keeps_the_highest_validation_oa_and_the_mamba_unless_clearly_beaten():
    assert choose({"mamba": 0.8, "svm": 0.9, "rf": 0.7}) == "svm"
    assert choose({"mamba": 0.8, "svm": 0.7, "rf": 0.85}) == "rf"
    assert choose({"mamba": 0.9, "svm": 0.9, "rf": 0.9}) == "mamba"
    assert choose({"mamba": 0.7, "svm": 0.9, "rf": 0.9}) == "svm"
    # Over 57 validation pixels one standard error of 0.6 is 0.065: two pixels more is noise.
    assert choose({"mamba": 0.60, "svm": 0.63, "rf": 0.5}, 57) == "mamba"
    assert choose({"mamba": 0.60, "svm": 0.70, "rf": 0.5}, 57) == "svm"
    assert choose({"mamba": 0.60, "svm": 0.63, "rf": 0.5}, 5700) == "svm"
    assert choose({"svm": 0.6, "rf": 0.61}, 57) == "rf"      # no Mamba: the plain maximum


def _outputs(d: Path) -> set[str]:
    return {p.name.removeprefix("scene") for p in d.iterdir()}


@pytest.mark.parametrize("kind", ["svm", pytest.param("rf", marks=pytest.mark.slow)])
def test_a_baseline_writes_the_output_set_and_loads_in_predict_and_batch(
        kind, trained: Trained, tmp_path: Path):
    m = tmp_path / kind
    r = hsimap("train", trained.made.scene, "-l", trained.made.labels, "-o", m,
               "--classifier", kind, "--quiet")
    assert r.returncode == 0, r.stderr
    assert f"model: {m} ({kind}," in r.stdout and "test OA" in r.stdout
    assert sorted(p.name for p in m.iterdir()) == ["classifier.safetensors", "model.json",
                                                   "split.qml", "split.tif", "split.tif.aux.xml"]
    card = json.loads((m / "model.json").read_text())
    assert card["classifier"]["kind"] == kind and card["classifier"]["unmixing"] is False
    # The split is the Mamba's (same seed, same protocol): the same pixels train each.
    with rasterio.open(m / "split.tif") as a, rasterio.open(trained.model_dir / "split.tif") as b:
        np.testing.assert_array_equal(a.read(1), b.read(1))

    out = tmp_path / "out"
    r = hsimap("predict", trained.made.scene, "-m", m, "-o", out, "--quiet", "--probabilities")
    assert r.returncode == 0, r.stderr
    mamba = tmp_path / "mamba"
    r = hsimap("predict", trained.made.scene, "-m", trained.model_dir, "-o", mamba, "--quiet",
               "--probabilities")
    assert r.returncode == 0, r.stderr
    unmixing = {"_abundances.tif", "_abundances.qml", "_abundances.png", "_error.tif",
                "_endmembers.sli", "_endmembers.hdr", "_endmembers.csv", "_endmembers.png"}
    got, full = _outputs(out), _outputs(mamba)
    assert unmixing <= full
    assert got == {n for n in full if not any(n.startswith(u) for u in unmixing)}
    assert {"_classes.tif", "_confidence.tif", "_probabilities.tif", "_areas.csv",
            "_classes.qml"} <= got
    with rasterio.open(out / "scene_classes.tif") as c, \
            rasterio.open(trained.made.scene) as s, \
            rasterio.open(out / "scene_probabilities.tif") as p:
        assert (c.crs, c.transform) == (s.crs, s.transform)
        classes, prob = c.read(1), p.read()
        valid = s.read(1, masked=True).mask == 0 if s.nodata is not None else None
    ids = trained.model.class_table.ids
    assert set(np.unique(classes)) - {0} <= set(ids)
    # The class map is the argmax of its probabilities, for every classifier.
    live = classes > 0
    if valid is not None:
        assert not live[~valid].any()
    top = np.sort(prob[:, live], 0)
    clear = top[-1] - top[-2] > 1e-6   # float32 ties may fall either way
    agree = np.asarray(ids)[np.nanargmax(prob[:, live], 0)] == classes[live]
    assert agree[clear].all() and clear.mean() > 0.99
    # The stored classifier is what predict applied: the test OA of the card on these pixels.
    assert card["test_metrics"]["overall_accuracy"] > 0.8

    listing = tmp_path / "scenes.txt"
    listing.write_text(f"{trained.made.scene}\n")
    r = hsimap("batch", "--list", listing, "-m", m, "-o", tmp_path / "batch", "--quiet",
               "--no-quicklooks")
    assert r.returncode == 0, r.stderr
    with rasterio.open(tmp_path / "batch" / "scene" / "scene_classes.tif") as b:
        np.testing.assert_array_equal(b.read(1), classes)


def _stripes(path: Path, labels_path: Path, size: int = 64, bands: int = 8, seed: int = 0):
    """Two classes whose pixels have the same two spectra in equal numbers: columns alternate
    in the left half (class 1), rows in the right (class 2). Only a pixel's neighbours tell
    the classes apart, which a per-pixel classifier cannot see."""
    rng = np.random.default_rng(seed)
    s1, s2 = rng.uniform(0.2, 0.4, bands), rng.uniform(0.5, 0.7, bands)
    yy, xx = np.mgrid[0:size, 0:size]
    left = xx < size // 2
    first = np.where(left, xx % 2 == 0, yy % 2 == 0)
    cube = np.where(first[None], s1[:, None, None], s2[:, None, None])
    cube = cube + rng.normal(0, 0.01, cube.shape)
    grid = Grid(size, size, rasterio.crs.CRS.from_epsg(32633),
                rasterio.transform.from_origin(500000, 5700000, 10, 10))
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=bands,
                       dtype="float32", crs=grid.crs, transform=grid.transform) as dst:
        dst.write(cube.astype(np.float32))
    write_raster(labels_path, np.where(left, 1, 2).astype(np.uint8), grid,
                 class_table=ClassTable([1, 2], ["cols", "rows"]))


def test_auto_keeps_the_mamba_where_only_context_separates_the_classes(tmp_path: Path):
    _stripes(tmp_path / "s.tif", tmp_path / "l.tif")
    scene = open_scene(tmp_path / "s.tif")
    labels, table = load_labels(tmp_path / "l.tif", scene)
    r = train(scene, labels, table, tmp_path / "m",
              TrainOptions(**{**FAST, "steps": 60, "window": 32, "halo": 4, "hidden": 16,
                              "val_every": 10}, classifier="auto", seed=0))
    oa = r.validation_oa
    assert set(oa) == {"mamba", "svm", "rf"}
    assert oa["mamba"] > max(oa["svm"], oa["rf"]) + 0.2, oa
    assert r.classifier == "mamba"
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "history.csv", "model.json", "model.safetensors", "split.qml", "split.tif",
        "split.tif.aux.xml"]
    card = json.loads((tmp_path / "m" / "model.json").read_text())["classifier"]
    assert card["kind"] == "mamba" and "highest validation OA" in card["chosen_by"]


def test_auto_keeps_a_baseline_where_it_validates_better_with_the_mamba_unmixing(
        trained: Trained, tmp_path: Path):
    """Three steps leave the network untrained; the SVM separates the synthetic classes."""
    scene = open_scene(trained.made.scene)
    labels, table = load_labels(trained.made.labels, scene)
    r = train(scene, labels, table, tmp_path / "m",
              TrainOptions(**{**FAST, "steps": 3, "val_every": 3}, classifier="auto", seed=0))
    oa = r.validation_oa
    assert r.classifier in ("svm", "rf") and oa[r.classifier] == max(oa.values())
    assert oa[r.classifier] > oa["mamba"] + 0.2
    model = load_model(tmp_path / "m")
    assert model.network is not None and model.classifier.kind == r.classifier
    assert model.card.validation_metrics["overall_accuracy"] == pytest.approx(oa[r.classifier])
    out = tmp_path / "out"
    rr = hsimap("predict", trained.made.scene, "-m", tmp_path / "m", "-o", out, "--quiet",
                "--no-quicklooks")
    assert rr.returncode == 0, rr.stderr
    names = _outputs(out)
    assert {"_abundances.tif", "_error.tif", "_endmembers.sli"} <= names   # from the network
    with rasterio.open(out / "scene_classes.tif") as c:
        classes = c.read(1)
    # The classes are the baseline's: the SVM's most probable class on the scaled pixels.
    from hsimap.inference import scale_values
    from hsimap.io.scene import read_window

    v, valid = read_window(scene, slice(0, scene.sizes["y"]), slice(0, scene.sizes["x"]),
                           valid_bands=model.band_indices)
    idx, _ = model.classifier.predict(scale_values(model, v)[:, valid].T)
    np.testing.assert_array_equal(classes[valid], np.asarray(table.ids)[idx])


def test_a_baseline_model_has_no_endmembers_to_give(trained: Trained, tmp_path: Path):
    scene = open_scene(trained.made.scene)
    labels, table = load_labels(trained.made.labels, scene)
    train(scene, labels, table, tmp_path / "m", TrainOptions(**FAST, classifier="rf"))
    model = load_model(tmp_path / "m")
    assert model.network is None and not model.unmixes
    from hsimap.errors import HsimapError

    with pytest.raises(HsimapError, match="no endmembers"):
        model.endmember_spectra()


def svm_model(d: Path, t: Trained) -> Path:
    m = d / "svm"
    scene = open_scene(t.made.scene)
    labels, table = load_labels(t.made.labels, scene)
    train(scene, labels, table, m, TrainOptions(**FAST, classifier="svm"))
    return m


def _tamper(what: str):
    def build(d: Path, t: Trained) -> Path:
        m = svm_model(d, t)
        f = m / "classifier.safetensors"
        if what == "missing":
            f.unlink()
        elif what == "pickle":
            f.write_bytes(b"\x80\x04\x95 not safetensors")
        elif what == "bands":
            from safetensors.numpy import load_file, save_file

            a = load_file(str(f))
            a["support_vectors"] = a["support_vectors"][:, :-1].copy()
            save_file(a, str(f))
        elif what == "kind":
            card = json.loads((m / "model.json").read_text())
            card["classifier"]["kind"] = "xgboost"
            (m / "model.json").write_text(json.dumps(card))
        return m
    return build


@pytest.mark.parametrize("what, message", [
    ("missing", "no classifier.safetensors in this folder (its card says its classes come "
                "from --classifier svm)"),
    ("pickle", "classifier.safetensors: not a safetensors file"),
    ("bands", "arrays do not fit a svm of 24 bands and 4 classes"),
    ("kind", "classifier {'kind': 'xgboost'"),
])
def test_a_damaged_baseline_is_refused_in_one_line(what, message, trained: Trained,
                                                   tmp_path: Path):
    m = _tamper(what)(tmp_path, trained)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    r = hsimap("predict", trained.made.scene, "-m", m, "-o", tmp_path / "out", "--quiet")
    assert r.returncode == 1
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:") and message in lines[0], r.stderr
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_classifier_choice_is_checked_before_any_work(trained: Trained, tmp_path: Path):
    r = hsimap("train", trained.made.scene, "-l", trained.made.labels, "-o", tmp_path / "m",
               "--classifier", "knn", "--quiet")
    assert r.returncode == 2 and "Invalid value for '--classifier'" in r.stderr
    assert not (tmp_path / "m").exists()
