"""``hsimap sample`` and ``evaluate --stratified`` together: the design and the estimators.

The coverage test draws 200 seeded samples from a map whose truth is known, and checks that
the 95% intervals of overall accuracy and of each class's area cover the true values in
92-98% of the draws.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from hsimap.accuracy import area_adjusted
from hsimap.design import allocate, draw, parse_distance, sample_size
from hsimap.errors import HsimapError
from tests.conftest import hsimap

IDS = [1, 2, 3, 4, 5]
PROPS = [0.5, 0.25, 0.15, 0.07, 0.03]
COMMISSION = [0.05, 0.15, 0.25, 0.3, 0.4]   # share of each map class that is truly another


@dataclass
class KnownMap:
    classes: np.ndarray
    truth: np.ndarray

    @property
    def overall(self) -> float:
        return float((self.classes == self.truth).mean())

    @property
    def area_share(self) -> np.ndarray:
        return np.array([(self.truth == j).mean() for j in IDS])

    @property
    def strata(self) -> np.ndarray:
        return np.array([(self.classes == i).sum() for i in IDS])


def known_map(side: int = 300, seed: int = 42) -> KnownMap:
    rng = np.random.default_rng(seed)
    classes = rng.choice(IDS, size=(side, side), p=PROPS).astype(np.int32)
    truth = classes.copy()
    for c, e in zip(IDS, COMMISSION, strict=True):
        wrong = (classes == c) & (rng.random(classes.shape) < e)
        truth[wrong] = rng.choice([i for i in IDS if i != c], size=int(wrong.sum()))
    return KnownMap(classes, truth)


@pytest.mark.parametrize("allocation", ["olofsson", "equal"])
def test_intervals_cover_the_truth_in_95_percent_of_samples(allocation):
    m = known_map()
    n = sample_size(m.strata, np.full(5, 0.8), 0.01)
    sizes = allocate(m.strata, n, allocation, 50)
    hits_oa, hits_area = 0, np.zeros(len(IDS))
    for seed in range(200):
        r, c = draw(m.classes, IDS, sizes, seed=seed)
        sample = np.zeros((5, 5))
        np.add.at(sample, (m.classes[r, c] - 1, m.truth[r, c] - 1), 1)
        a = area_adjusted(sample, m.strata, 1.0, "share", [str(i) for i in IDS])
        hits_oa += abs(a.overall_accuracy - m.overall) <= a.overall_accuracy_ci95
        hits_area += np.abs(a.area - m.area_share) <= a.area_ci95
    assert 0.92 <= hits_oa / 200 <= 0.98
    assert np.all((hits_area / 200 >= 0.92) & (hits_area / 200 <= 0.98)), hits_area / 200


def test_sample_size_is_olofsson_eq_13():
    # The paper's worked example (section 5.1.1): four strata, W = 0.02, 0.015, 0.32, 0.645,
    # U = 0.7, 0.6, 0.9, 0.95, S(O) = 0.01: n = 641 (large N).
    n = sample_size(np.array([20_000, 15_000, 320_000, 645_000]) * 1000,
                    np.array([0.7, 0.6, 0.9, 0.95]), 0.01)
    assert n == 641


def test_allocations():
    strata = np.array([90_000, 9_000, 900, 30])
    assert allocate(strata, 400, "proportional", 0).sum() == 400
    # capped by N_i, and what the small stratum cannot hold goes to the others: eq. 13's size
    assert list(allocate(strata, 400, "equal", 0)) == [124, 123, 123, 30]
    o = allocate(strata, 400, "olofsson", 50)
    # the 20 the smallest cannot hold go to the others in proportion to area (18, 2, 0)
    assert list(o) == [268, 52, 50, 30] and o.sum() == 400
    assert list(allocate(strata, 400, "proportional", 50)) == [378, 52, 50, 30]


def test_min_distance_keeps_points_apart():
    m = known_map(side=120)
    sizes = allocate(m.strata, 200, "proportional", 10)
    r, c = draw(m.classes, IDS, sizes, min_distance=4, seed=0)
    pts = np.stack([r, c], 1).astype(float)
    d = np.sqrt(((pts[:, None] - pts[None]) ** 2).sum(-1)) + np.eye(len(pts)) * 99
    assert d.min() >= 4
    assert len(r) == sizes.sum()
    for i, n in zip(IDS, sizes, strict=True):
        assert (m.classes[r, c] == i).sum() == n
    assert parse_distance("90m") == (90.0, "m") and parse_distance("3") == (3.0, "px")
    with pytest.raises(HsimapError, match="no distance"):
        parse_distance("far")


# -- end to end: files, the CLI, QGIS's part played by pyogrio ------------------------------

CRS = "EPSG:32633"
TRANSFORM = Affine(30.0, 0, 500_000.0, 0, -30.0, 5_800_000.0)


def write_map(path: Path, classes: np.ndarray) -> Path:
    """A class map as hsimap writes one (colour table, class names)."""
    from rasterio.crs import CRS as RioCRS

    from hsimap.classes import ClassTable
    from hsimap.io.rasters import Grid, RasterSink

    table = ClassTable(IDS, ["Urban", "Water", "Forest", "Crop", "Bare"],
                       [(200, 0, 0), (0, 0, 200), (0, 120, 0), (220, 220, 0), (150, 100, 50)])
    grid = Grid(classes.shape[1], classes.shape[0], RioCRS.from_string(CRS), TRANSFORM)
    with RasterSink(path, grid, 1, "uint8", nodata=0, class_table=table) as sink:
        sink.write(classes, 0, 0)
    return path


def fill_reference(sample: Path, truth: np.ndarray, keep: float = 1.0) -> None:
    """Play the analyst: the truth's class at each point into ``reference``."""
    import pyogrio
    import shapely

    from hsimap.io.points import data_layer

    layer = data_layer(sample)   # not QGIS's layer_styles table beside it
    meta, _, geom, fields = pyogrio.raw.read(sample, layer=layer)
    pts = shapely.from_wkb(geom)
    rows, cols = rasterio.transform.rowcol(TRANSFORM, shapely.get_x(pts), shapely.get_y(pts))
    ref = truth[np.asarray(rows), np.asarray(cols)].astype(np.int32)
    names = list(meta["fields"])
    fields = list(fields)
    fields[names.index("reference")] = ref
    mask = [np.zeros(len(ref), bool)] * len(names)
    n_left = int(round(len(ref) * (1 - keep)))
    mask[names.index("reference")] = np.arange(len(ref)) < n_left
    info = pyogrio.read_info(sample, layer=layer)
    pyogrio.raw.write(sample, geom, fields, fields=names, field_mask=mask, driver="GPKG",
                      geometry_type="Point", crs=meta["crs"], layer=info["layer_name"]
                      if "layer_name" in info else sample.stem,
                      layer_metadata=info.get("layer_metadata"))


def test_sample_fill_evaluate_round_trip(tmp_path):
    m = known_map(side=200, seed=3)
    map_path = write_map(tmp_path / "map_classes.tif", m.classes)
    out = tmp_path / "sample.gpkg"
    r = hsimap("sample", map_path, "-o", out, "--seed", 7)
    assert r.returncode == 0, r.stderr
    assert "Forest" in r.stdout and "olofsson allocation" in r.stdout
    import pyogrio

    from hsimap.io.points import data_layer

    info = pyogrio.read_info(out, layer=data_layer(out))
    assert {"sample_id", "map_class", "map_class_name", "reference"} <= set(info["fields"])
    design = json.loads(info["layer_metadata"]["HSIMAP_SAMPLE_DESIGN"])
    assert design["strata_pixels"] == [int(n) for n in m.strata]
    assert design["seed"] == 7 and design["allocation"] == "olofsson"
    assert info["features"] == sum(design["drawn"]) == sum(design["planned"])
    # The reference field starts empty: nothing to evaluate yet.
    _, _, _, fields = pyogrio.raw.read(out, layer=data_layer(out), columns=["reference"])
    assert np.all(np.isnan(np.asarray(fields[0], float)))
    fill_reference(out, m.truth)
    r = hsimap("evaluate", map_path, "-l", out, "--class-field", "reference", "--stratified",
               "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    adj = rep["area_adjusted"]
    oa, ci = adj["overall_accuracy"], adj["overall_accuracy_ci95"]
    assert abs(oa - m.overall) <= 2 * ci      # one draw: well inside twice the half-width
    # Against another map (strata changed), the sample is refused.
    other = m.classes.copy()
    other[:20] = 2
    other_path = write_map(tmp_path / "other_classes.tif", other)
    r = hsimap("evaluate", other_path, "-l", out, "--class-field", "reference", "--stratified")
    assert r.returncode == 1
    assert "strata differ" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def _float_map(d: Path) -> Path:
    p = d / "conf.tif"
    with rasterio.open(p, "w", driver="GTiff", width=8, height=8, count=1, dtype="float32",
                       crs=CRS, transform=TRANSFORM) as dst:
        dst.write(np.zeros((1, 8, 8), np.float32))
    return p


def _unreferenced_map(d: Path) -> Path:
    import warnings

    p = d / "plain.tif"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(p, "w", driver="GTiff", width=8, height=8, count=1,
                           dtype="uint8") as dst:
            dst.write(np.ones((1, 8, 8), np.uint8))
    return p


def _map(d: Path) -> Path:
    return write_map(d / "m_classes.tif", known_map(side=60).classes)


def _ua_csv(d: Path) -> Path:
    p = d / "ua.csv"
    p.write_text("id,expected_ua\n1,0.9\n2,0.8\n")
    return p


# input, extra arguments, the one-line message, the exit code; nothing is left on disk.
HOSTILE = [
    ("float raster", _float_map, [], "float32 values, not a class map", 1),
    ("no georeferencing", _unreferenced_map, [], "no georeferencing", 1),
    ("not a GeoPackage", _map, ["-o", "{d}/s.shp"], "name the sample .gpkg", 1),
    ("distance not a distance", _map, ["--min-distance", "far"], "is no distance", 1),
    ("UA CSV missing a class", _map, ["--expected-ua", "{ua}"], "no expected_ua for class 3",
     1),
    ("target SE of 0", _map, ["--target-se", "0"], "--target-se must be between 0 and 1", 1),
    ("expected UA above 1", _map, ["--expected-ua", "1.5"], "must be in (0, 1]", 1),
]


@pytest.mark.parametrize("case", HOSTILE, ids=[c[0] for c in HOSTILE])
def test_hostile_sample_inputs(tmp_path, case):
    _, make, extra, message, code = case
    src = make(tmp_path)
    ua = _ua_csv(tmp_path)
    args = [a.format(d=tmp_path, ua=ua) for a in extra]
    if "-o" not in args:
        args += ["-o", str(tmp_path / "s.gpkg")]
    before = set(tmp_path.iterdir())
    r = hsimap("sample", src, *args)
    assert r.returncode == code, r.stderr
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert set(tmp_path.iterdir()) == before      # no sample, no temporary file


def test_existing_sample_is_kept_without_overwrite(tmp_path):
    src = _map(tmp_path)
    out = tmp_path / "s.gpkg"
    assert hsimap("sample", src, "-o", out).returncode == 0
    digest = out.read_bytes()
    r = hsimap("sample", src, "-o", out, "--seed", 1)
    assert r.returncode == 1 and "exists" in r.stderr
    assert out.read_bytes() == digest
    assert hsimap("sample", src, "-o", out, "--seed", 1, "--overwrite").returncode == 0
    assert out.read_bytes() != digest
