"""``--probabilities``: one band per class, the softmax the class map and confidence come from,
in predict and batch, as float32 or scaled uint8, all-or-nothing like the other products."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio

from tests.conftest import hsimap


def _read(path):
    with rasterio.open(path) as src:
        return src.read(masked=False), src.descriptions, src.units, src.scales, src.nodata


def test_probabilities_agree_with_the_class_map_and_confidence(trained, tmp_path):
    out = tmp_path / "p"
    r = hsimap("-q", "predict", trained.made.scene, "-m", trained.model_dir, "-o", out,
               "--probabilities", "--no-quicklooks", "--stac")
    assert r.returncode == 0, r.stderr
    stem = trained.made.scene.stem
    prob, names, units, _, nodata = _read(out / f"{stem}_probabilities.tif")
    table = trained.model.class_table
    assert list(names) == list(table.names) and set(units) == {"probability"}
    assert prob.shape[0] == len(table.ids) and np.isnan(nodata)
    with rasterio.open(out / f"{stem}_classes.tif") as src:
        classes = src.read(1)
    with rasterio.open(out / f"{stem}_confidence.tif") as src:
        conf = src.read(1)
    inside = classes > 0
    assert np.all(np.isnan(prob[:, ~inside]))
    np.testing.assert_allclose(prob[:, inside].sum(0), 1.0, atol=1e-5)
    ids = np.asarray(table.ids)
    assert np.array_equal(ids[prob[:, inside].argmax(0)], classes[inside])
    np.testing.assert_allclose(prob[:, inside].max(0), conf[inside], atol=1e-6)
    assert (out / f"{stem}_probabilities.qml").exists()
    item = json.loads((out / f"{stem}_item.json").read_text())
    assert "probabilities" in item["assets"]
    with rasterio.open(out / f"{stem}_probabilities.tif") as src:
        assert src.tags()["HSIMAP_PROBABILITIES"] == "float32"

    # uint8: 0-254 with a scale factor of 1/254, 255 nodata, within half a step of float32.
    out8 = tmp_path / "p8"
    r = hsimap("-q", "predict", trained.made.scene, "-m", trained.model_dir, "-o", out8,
               "--probabilities", "--probabilities-type", "uint8", "--no-quicklooks")
    assert r.returncode == 0, r.stderr
    q, names8, _, scales, nodata8 = _read(out8 / f"{stem}_probabilities.tif")
    assert q.dtype == np.uint8 and nodata8 == 255 and list(names8) == list(table.names)
    np.testing.assert_allclose(scales, 1 / 254)
    assert np.all(q[:, ~inside] == 255) and q[:, inside].max() <= 254
    np.testing.assert_allclose(q[:, inside] * scales[0], prob[:, inside], atol=0.5 / 254 + 1e-6)

    # A set written without probabilities replaces one with them: no stale file is left.
    r = hsimap("-q", "predict", trained.made.scene, "-m", trained.model_dir, "-o", out8,
               "--no-quicklooks", "--overwrite")
    assert r.returncode == 0, r.stderr
    assert not (out8 / f"{stem}_probabilities.tif").exists()
    assert not (out8 / f"{stem}_probabilities.qml").exists()


def test_batch_takes_every_predict_option(trained, tmp_path):
    """--probabilities, --ignore-scale, --stac and --no-quicklooks reach each scene."""
    out = tmp_path / "b"
    r = hsimap("-q", "batch", trained.made.scene, "-m", trained.model_dir, "-o", out,
               "--probabilities", "--probabilities-type", "uint8", "--ignore-scale",
               "--no-quicklooks", "-j", "1")
    assert r.returncode == 0, r.stderr
    stem = trained.made.scene.stem
    scene_dir = out / stem
    assert (scene_dir / f"{stem}_probabilities.tif").exists()
    assert not list(scene_dir.glob("*.png"))
    rec = json.loads((out / "manifest.jsonl").read_text().splitlines()[-1])
    assert rec["options"]["probabilities"] == "uint8" and rec["options"]["ignore_scale"]
    assert "probabilities" in rec["outputs"]


def test_suggest_picks_unsure_unlabelled_spread_points(trained, tmp_path):
    import pyogrio
    import shapely

    from hsimap.workflows.suggest import uncertainty

    out = tmp_path / "p"
    assert hsimap("-q", "predict", trained.made.scene, "-m", trained.model_dir, "-o", out,
                  "--probabilities", "--no-quicklooks").returncode == 0
    stem = trained.made.scene.stem
    prob_path = out / f"{stem}_probabilities.tif"
    with rasterio.open(prob_path) as src:
        prob, transform = src.read(), src.transform
    u = uncertainty(prob)
    # The labels the analyst has: the model's training pixels.
    split = tmp_path / "known.tif"
    with rasterio.open(trained.model_dir / "split.tif") as src:
        labelled = src.read(1) == 1
        profile = src.profile
    with rasterio.open(split, "w", **profile) as dst:
        dst.write(labelled.astype(profile["dtype"]), 1)

    def points(path):
        meta, _, geom, fields = pyogrio.raw.read(path)
        pts = shapely.from_wkb(geom)
        r, c = rasterio.transform.rowcol(transform, shapely.get_x(pts), shapely.get_y(pts))
        return np.asarray(r), np.asarray(c), dict(zip(meta["fields"], fields, strict=True))

    from_model = tmp_path / "next.gpkg"
    r = hsimap("suggest", trained.made.scene, "-m", trained.model_dir, "-o", from_model,
               "-n", 12, "-l", split, "--min-distance", 4)
    assert r.returncode == 0, r.stderr
    rows, cols, f = points(from_model)
    assert len(rows) == 12 and not labelled[rows, cols].any()
    d = np.hypot(rows[:, None] - rows[None], cols[:, None] - cols[None]) + np.eye(12) * 99
    assert d.min() >= 4
    assert np.median(u[rows, cols]) > np.nanpercentile(u, 75)   # among the least sure
    # margin: the lead of the most probable class, lower is less sure; entropy beside it
    np.testing.assert_allclose(f["margin"], 1 - u[rows, cols], atol=1e-4)
    assert np.all(np.diff(f["margin"]) >= -1e-9)                # least sure first
    assert np.all((f["entropy"] >= 0) & (f["entropy"] <= 1))
    # The same from the probabilities raster, without the model.
    from_raster = tmp_path / "next2.gpkg"
    r = hsimap("suggest", prob_path, "-o", from_raster, "-n", 12, "-l", split,
               "--min-distance", 4)
    assert r.returncode == 0, r.stderr
    rows2, cols2, f2 = points(from_raster)
    assert len(rows2) == 12 and not labelled[rows2, cols2].any()
    assert set(f2["map_class"]) <= set(trained.model.class_table.ids)
    # The same cells and the same order: the same points as from the scene.
    assert list(zip(rows2, cols2, strict=True)) == list(zip(rows, cols, strict=True))
    np.testing.assert_array_equal(f2["map_class"], f["map_class"])
    # A scene without --model is refused in one line.
    r = hsimap("suggest", trained.made.scene, "-o", tmp_path / "x.gpkg")
    assert r.returncode == 1 and "give --model" in r.stderr
    assert not (tmp_path / "x.gpkg").exists()


def _prob_raster(path, prob, ids=None):
    from rasterio.transform import from_origin

    from hsimap.io.probabilities import tags

    c, h, w = prob.shape
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=c,
                       dtype="float32", crs="EPSG:32611", nodata=float("nan"),
                       transform=from_origin(500000, 4000000, 10, 10)) as dst:
        dst.write(prob.astype(np.float32))
        dst.update_tags(**tags("float32", ids or list(range(1, c + 1))))
        for b in range(c):
            dst.set_band_unit(b + 1, "probability")
            dst.set_band_description(b + 1, f"c{b + 1}")


def test_suggest_takes_exactly_the_least_sure_pixels(tmp_path):
    """A constructed raster: everything sure (margin 0.9) but a few pixels whose margins are
    known. The points are those pixels, least sure first, minus the spread rule's exclusions."""
    import pyogrio

    from hsimap.workflows.suggest import SuggestOptions, suggest, suggest_pixels

    h, w = 130, 150
    prob = np.zeros((3, h, w), np.float32)
    prob[0], prob[1], prob[2] = 0.95, 0.05, 0.0
    unsure = {(5, 5): 0.0, (5, 7): 0.01, (40, 90): 0.02, (100, 20): 0.03, (70, 140): 0.04,
              (120, 120): 0.05, (6, 100): 0.06}
    for (r, c), m in unsure.items():
        prob[:, r, c] = [(1 - m) / 2, (1 + m) / 2, 0.0]
    prob[:, 0, :] = np.nan                      # nodata row: never a point
    path = tmp_path / "p.tif"
    _prob_raster(path, prob, ids=[3, 7, 9])
    s = suggest_pixels(path, SuggestOptions(n=6, min_distance="3", per_window=4))
    # (5, 7) is within 3 px of (5, 5), which is less sure: excluded by the spread rule.
    want = [k for k in sorted(unsure, key=unsure.get) if k != (5, 7)][:6]
    assert list(zip(s.rows.tolist(), s.cols.tolist(), strict=True)) == want
    np.testing.assert_allclose(s.margin, [unsure[k] for k in want], atol=1e-6)
    # the band's class id, not its index (the tie at (5, 5) goes to the first band)
    assert s.class_ids.tolist() == [3] + [7] * 5
    # Without the spread rule (distance 0) the neighbour comes in second.
    s0 = suggest_pixels(path, SuggestOptions(n=3, min_distance="0", per_window=4))
    assert list(zip(s0.rows.tolist(), s0.cols.tolist(), strict=True))[:2] == [(5, 5), (5, 7)]
    # Entropy orders the same pixels the same way here.
    se = suggest_pixels(path, SuggestOptions(n=6, min_distance="3", per_window=4,
                                             measure="entropy"))
    assert list(zip(se.rows.tolist(), se.cols.tolist(), strict=True)) == want
    # Asked for more than there are: all that can be had, and a warning saying why.
    with pytest.warns(UserWarning, match=r"of 50 points"):
        many = suggest_pixels(path, SuggestOptions(n=50, min_distance="60", per_window=1))
    assert 0 < len(many.rows) < 50
    # The GeoPackage: 1.2, margin and entropy fields.
    out = tmp_path / "next.gpkg"
    suggest(path, out, SuggestOptions(n=6, min_distance="3", per_window=4))
    info = pyogrio.read_info(out)
    assert {"margin", "entropy", "reference", "map_class"} <= set(info["fields"])
    import sqlite3

    with sqlite3.connect(out) as db:
        assert db.execute("PRAGMA application_id").fetchone()[0] == 0x47504B47
        assert db.execute("PRAGMA user_version").fetchone()[0] == 10200


def test_suggest_is_n_log_n(tmp_path):
    """10,000 points of a 400 x 400 raster in seconds (the old greedy was quadratic)."""
    import time

    from hsimap.workflows.suggest import SuggestOptions, suggest_pixels

    rng = np.random.default_rng(0)
    p = rng.random((4, 400, 400)).astype(np.float32)
    path = tmp_path / "p.tif"
    _prob_raster(path, p / p.sum(0))
    t = time.perf_counter()
    s = suggest_pixels(path, SuggestOptions(n=10_000, min_distance="1", per_window=400))
    assert len(s.rows) == 10_000
    assert time.perf_counter() - t < 60
