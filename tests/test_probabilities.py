"""``--probabilities``: one band per class, the softmax the class map and confidence come from,
in predict and batch, as float32 or scaled uint8, all-or-nothing like the other products."""

from __future__ import annotations

import json

import numpy as np
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
    assert len(set(f["map_class"])) >= 2                        # spread over the classes
    np.testing.assert_allclose(f["margin"], u[rows, cols], atol=1e-4)
    # The same from the probabilities raster, without the model.
    from_raster = tmp_path / "next2.gpkg"
    r = hsimap("suggest", prob_path, "-o", from_raster, "-n", 12, "-l", split,
               "--min-distance", 4)
    assert r.returncode == 0, r.stderr
    rows2, cols2, f2 = points(from_raster)
    assert len(rows2) == 12 and not labelled[rows2, cols2].any()
    assert set(f2["map_class"]) <= set(trained.model.class_table.ids)
    # A scene without --model is refused in one line.
    r = hsimap("suggest", trained.made.scene, "-o", tmp_path / "x.gpkg")
    assert r.returncode == 1 and "give --model" in r.stderr
    assert not (tmp_path / "x.gpkg").exists()
