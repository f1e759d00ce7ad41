"""evaluate matches classes by name when both sides have names, and counts every pixel."""

from __future__ import annotations

import json

import numpy as np
import pytest
from affine import Affine
from rasterio.crs import CRS

from hsimap.classes import ClassTable
from hsimap.io.rasters import Grid, write_raster
from tests.conftest import hsimap

TABLE = ClassTable([1, 2, 3, 4], ["barley", "maize", "orchard", "wheat"])
GRID = Grid(40, 20, CRS.from_epsg(32611), Affine(2, 0, 500000, 0, -2, 4100000))


def _polygon(x0, x1, y0, y1):
    """A rectangle in map coordinates from pixel columns x0..x1 and rows y0..y1."""
    xa, xb = 500000 + 2 * x0, 500000 + 2 * x1
    ya, yb = 4100000 - 2 * y0, 4100000 - 2 * y1
    return {"type": "Polygon", "coordinates": [[[xa, ya], [xb, ya], [xb, yb], [xa, yb],
                                                [xa, ya]]]}


def _truth(path, classes):
    features = [{"type": "Feature", "properties": {"crop": name}, "geometry": geom}
                for name, geom in classes]
    path.write_text(json.dumps({"type": "FeatureCollection", "crs": {
        "type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32611"}},
        "features": features}))
    return path


def test_vector_truth_is_matched_by_name(tmp_path):
    m = np.zeros((20, 40), np.uint8)
    m[:, :20] = 3          # orchard on the left
    m[:, 20:] = 2          # maize on the right
    m[0, 25] = 0           # one unclassified pixel inside the maize polygon
    write_raster(tmp_path / "map.tif", m, GRID, class_table=TABLE)
    truth = _truth(tmp_path / "val.geojson", [("orchard", _polygon(2, 18, 0, 20)),
                                               ("maize", _polygon(22, 38, 0, 20))])
    r = hsimap("evaluate", tmp_path / "map.tif", "-l", truth, "--class-field", "crop", "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    n = 16 * 20 * 2
    assert res["pixels"] == n
    # Matched by number, truth's maize (its 1st value) would be scored against barley.
    assert res["overall_accuracy"] == (n - 1) / n
    ids = res["class_ids"]
    maize, orchard = ids.index(2), ids.index(3)
    assert res["confusion"][orchard][orchard] == 320
    assert res["confusion"][maize][maize] == 319 and res["other"][maize] == 1
    assert all(sum(row) + o == (320 if i in (maize, orchard) else 0)
               for i, (row, o) in enumerate(zip(res["confusion"], res["other"], strict=True)))


def test_truth_classes_the_map_does_not_have_are_refused(tmp_path):
    write_raster(tmp_path / "map.tif", np.full((20, 40), 2, np.uint8), GRID, class_table=TABLE)
    truth = _truth(tmp_path / "val.geojson", [("vineyard", _polygon(2, 18, 0, 20))])
    r = hsimap("evaluate", tmp_path / "map.tif", "-l", truth, "--class-field", "crop")
    assert r.returncode == 1
    assert "classes 'vineyard' are not among" in r.stderr and "(against the map)" in r.stderr


def test_area_adjusted_estimates_reproduce_olofsson_2014():
    """The worked example of Olofsson et al. (2014), section 5 (tables 4-5): 30 m pixels,
    strata of 200,000 / 150,000 / 3,200,000 / 6,450,000 px; the paper reports deforestation
    21,158 +- 6,158 ha and forest gain 11,686 +- 3,756 ha, OA 0.95 +- 0.02, user's accuracy
    0.88 +- 0.07 and producer's 0.75 +- 0.21 for deforestation."""
    from hsimap.accuracy import area_adjusted

    sample = np.array([[66, 0, 5, 4], [0, 55, 8, 12], [1, 0, 153, 11], [2, 1, 9, 313]])
    strata = np.array([200_000, 150_000, 3_200_000, 6_450_000])
    a = area_adjusted(sample, strata, strata.sum() * 0.09, "ha", ["d", "g", "f", "n"])
    np.testing.assert_allclose(a.area[:2], [21_158, 11_686], atol=0.5)
    np.testing.assert_allclose(a.area_ci95[:2], [6_158, 3_756], atol=0.5)
    assert round(a.overall_accuracy, 2) == 0.95 and round(a.overall_accuracy_ci95, 2) == 0.02
    assert (round(a.users_accuracy[0], 2), round(a.users_accuracy_ci95[0], 2)) == (0.88, 0.07)
    assert (round(a.producers_accuracy[0], 2),
            round(a.producers_accuracy_ci95[0], 2)) == (0.75, 0.21)
    assert a.area.sum() == pytest.approx(strata.sum() * 0.09)


def test_accuracy_report_with_a_stratified_sample(tmp_path):
    """A map whose class 2 is over-mapped; a stratified random sample of 60 reference pixels
    per map class. The report's per-class figures match scikit-learn's, mapped areas are
    pixel counts times 4 m^2, and the area-adjusted estimate of each class covers its true
    area, which the mapped area does not."""
    from sklearn.metrics import precision_recall_fscore_support

    rng = np.random.default_rng(0)
    grid = Grid(200, 100, CRS.from_epsg(32611), Affine(2, 0, 500000, 0, -2, 4100000))
    truth = np.ones((100, 200), np.uint8)
    truth[:, 120:] = 2
    truth[60:, :] = 3
    mapped = truth.copy()
    mapped[(truth == 1) & (rng.random(truth.shape) < 0.2)] = 2    # 20% of class 1 mapped 2
    table = ClassTable([1, 2, 3], ["grass", "shrub", "water"])
    write_raster(tmp_path / "map.tif", mapped, grid, class_table=table)
    sample = np.zeros_like(truth)
    for c in (1, 2, 3):
        idx = rng.choice(np.flatnonzero(mapped == c), 60, replace=False)
        sample.flat[idx] = truth.flat[idx]
    write_raster(tmp_path / "ref.tif", sample, grid, class_table=table)
    r = hsimap("evaluate", tmp_path / "map.tif", "-l", tmp_path / "ref.tif", "--stratified",
               "--json", "--csv", tmp_path / "report.csv", "--confusion-csv",
               tmp_path / "cm.csv", "--png", tmp_path / "cm.png")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    keep = sample > 0
    p, rc, f1, _ = precision_recall_fscore_support(sample[keep], mapped[keep], labels=[1, 2, 3])
    rows = res["classes"]
    np.testing.assert_allclose([c["users_accuracy"] for c in rows], p)
    np.testing.assert_allclose([c["producers_accuracy"] for c in rows], rc)
    np.testing.assert_allclose([c["f1"] for c in rows], f1)
    for c in rows:
        assert c["mapped_pixels"] == int((mapped == c["id"]).sum())
        assert c["mapped_area_ha"] == pytest.approx(c["mapped_pixels"] * 4 / 1e4)
        true_ha = (truth == c["id"]).sum() * 4 / 1e4
        assert abs(c["adjusted_area_ha"] - true_ha) <= c["adjusted_area_ha_ci95"]
    shrub = rows[1]
    assert abs(shrub["mapped_area_ha"] - (truth == 2).sum() * 4e-4) > shrub["adjusted_area_ha_ci95"]
    assert 0 < res["area_adjusted"]["overall_accuracy_ci95"] < 0.1
    csv_rows = (tmp_path / "report.csv").read_text().splitlines()
    assert csv_rows[0].startswith("id,name,reference_pixels,mapped_pixels,mapped_area_ha,"
                                  "producers_accuracy,users_accuracy,f1,adjusted_area_ha")
    assert len(csv_rows) == 4
    assert (tmp_path / "cm.csv").read_text().splitlines()[1].startswith("grass,")
    assert (tmp_path / "cm.png").read_bytes()[:4] == b"\x89PNG"


def test_stratified_estimates_refuse_a_class_with_one_reference_pixel(tmp_path):
    m = np.ones((20, 40), np.uint8)
    m[:, 20:] = 2
    write_raster(tmp_path / "map.tif", m, GRID, class_table=TABLE)
    ref = np.zeros_like(m)
    ref[0, :5] = 1
    ref[0, 30] = 2
    write_raster(tmp_path / "ref.tif", ref, GRID, class_table=TABLE)
    r = hsimap("evaluate", tmp_path / "map.tif", "-l", tmp_path / "ref.tif", "--stratified")
    assert r.returncode == 1
    assert "need at least 2 reference pixels in every mapped class; maize" in r.stderr


def test_mapped_area_on_a_geographic_grid_follows_latitude(tmp_path):
    """0.001 degree pixels at 60 N cover about half the ground of those at the equator (0.505
    on the WGS84 ellipsoid), each row measured on it."""
    from pyproj import Geod

    from hsimap.io.areas import mapped_area

    areas = []
    for lat in (0.0, 60.0):
        grid = Grid(10, 10, CRS.from_epsg(4326), Affine(0.001, 0, 10, 0, -0.001, lat + 0.005))
        write_raster(tmp_path / f"m{lat}.tif", np.ones((10, 10), np.uint8), grid,
                     class_table=TABLE)
        areas.append(mapped_area(tmp_path / f"m{lat}.tif", [1]).hectares[0])
    g = Geod(ellps="WGS84")
    exact = abs(g.polygon_area_perimeter([10, 10.01, 10.01, 10], [60.005, 60.005, 59.995,
                                                                   59.995])[0]) / 1e4
    assert areas[1] == pytest.approx(exact, rel=1e-6)
    assert areas[1] / areas[0] == pytest.approx(0.505, abs=0.001)   # cos 60 = 0.5, flattened
