"""evaluate matches classes by name when both sides have names, and counts every pixel."""

from __future__ import annotations

import json

import numpy as np
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
    assert "classes vineyard are not among the map's classes" in r.stderr
