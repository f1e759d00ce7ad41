"""What a GIS user opens (issue 14): provenance and units in every raster, QGIS styles beside
the maps, the area table, a minimum mapping unit, and the class map as polygons."""

from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from rasterio.features import shapes

from hsimap import __version__
from tests.conftest import Trained, hsimap


@pytest.fixture(scope="module")
def maps(trained: Trained, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gis") / "maps"
    r = hsimap("predict", trained.made.scene, "-m", trained.model_dir, "-o", out, "--quiet")
    assert r.returncode == 0, r.stderr
    return out


def test_every_raster_says_where_it_came_from_and_in_what_units(maps, trained: Trained):
    card = json.loads((trained.model_dir / "model.json").read_text())
    units = {"classes": "", "abundances": "fraction", "confidence": "probability",
             "error": "radians"}
    for key, unit in units.items():
        with rasterio.open(maps / f"scene_{key}.tif") as src:
            tags = src.tags()
            assert tags["HSIMAP_VERSION"] == __version__
            assert tags["HSIMAP_MODEL_HASH"] == card["model_hash"]
            assert tags["HSIMAP_SOURCE_SCENE"] == str(Path(trained.made.scene).resolve())
            assert tags["HSIMAP_SOURCE_MODIFIED"].startswith("20")
            assert all((u or "") == unit for u in src.units)
            assert all(src.descriptions)
    with rasterio.open(maps / "scene_abundances.tif") as src:
        assert list(src.descriptions) == card["endmember_names"]


def test_qgis_styles_carry_the_class_table_and_a_ramp(maps, trained: Trained):
    table = trained.model.class_table
    root = ET.parse(maps / "scene_classes.qml").getroot()
    entries = root.findall("./pipe/rasterrenderer[@type='paletted']/colorPalette/paletteEntry")
    assert [(int(e.get("value")), e.get("label")) for e in entries] == \
        list(zip(table.ids, table.names, strict=True))
    hexes = [f"#{r:02x}{g:02x}{b:02x}" for r, g, b in table.colors]
    assert [e.get("color") for e in entries] == hexes
    ramp = ET.parse(maps / "scene_abundances.qml").getroot()
    shader = ramp.find("./pipe/rasterrenderer/rastershader/colorrampshader")
    assert (shader.get("minimumValue"), shader.get("maximumValue")) == ("0.0", "1.0")


def test_the_area_table_adds_up_to_the_class_map(maps, trained: Trained):
    with rasterio.open(maps / "scene_classes.tif") as src:
        classes, res = src.read(1), src.res
    rows = list(csv.DictReader(open(maps / "scene_areas.csv")))
    assert [int(r["id"]) for r in rows] == trained.model.class_table.ids
    for r in rows:
        n = int((classes == int(r["id"])).sum())
        assert int(r["pixels"]) == n
        assert float(r["hectares"]) == pytest.approx(n * res[0] * res[1] / 1e4, abs=1e-4)


def _patch_sizes(a: np.ndarray) -> list[int]:
    """Pixels of every 8-connected patch of one class (scipy, independent of GDAL's sieve)."""
    from scipy.ndimage import label

    sizes = []
    for c in np.unique(a[a > 0]):
        lab, _ = label(a == c, structure=np.ones((3, 3)))
        sizes += np.bincount(lab.ravel())[1:].tolist()
    return sizes


def test_minimum_mapping_unit(trained: Trained, maps, tmp_path):
    r = hsimap("predict", trained.made.scene, "-m", trained.model_dir, "-o", tmp_path,
               "--quiet", "--no-quicklooks", "--mmu", 40)
    assert r.returncode == 0, r.stderr
    with rasterio.open(maps / "scene_classes.tif") as a, \
            rasterio.open(tmp_path / "scene_classes.tif") as b:
        raw, sieved = a.read(1), b.read(1)
        assert b.tags()["HSIMAP_MMU_PIXELS"] == "40"
    assert min(_patch_sizes(raw)) < 40           # the unsieved map has small patches
    assert min(_patch_sizes(sieved)) >= 40
    assert ((raw == 0) == (sieved == 0)).all()   # nodata neither grows nor shrinks


def test_vectorize_to_geopackage(maps, tmp_path):
    out = tmp_path / "classes.gpkg"
    r = hsimap("vectorize", maps / "scene_classes.tif", "-o", out)
    assert r.returncode == 0, r.stderr
    meta, _, geoms, fields = pyogrio.raw.read(out)
    with rasterio.open(maps / "scene_classes.tif") as src:
        a, crs, res = src.read(1), src.crs, src.res
        expected = sum(1 for _ in shapes(a.astype(np.int32), mask=a > 0, connectivity=8))
        assert pyogrio.read_info(out)["crs"] == f"EPSG:{crs.to_epsg()}"
    assert meta["fields"].tolist() == ["class_id", "class_name", "area_ha"]
    assert len(geoms) == expected
    polys = shapely.from_wkb(geoms)
    # 8-connected patches touching at corners gave self-crossing rings before: every feature
    # valid now (QGIS's Clip and Dissolve stop on invalid ones), one geometry type for all.
    assert all(shapely.is_valid(polys)), shapely.is_valid_reason(polys[~shapely.is_valid(polys)])
    assert set(shapely.get_type_id(polys)) == {6}   # MultiPolygon
    import sqlite3

    # GeoPackage 1.2: QGIS 3.22 (GDAL 3.6) warns that 1.4, GDAL 3.10's default, "may only be
    # partially supported" on every open.
    with sqlite3.connect(out) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 10200
    ids, names, ha = fields
    for c in np.unique(ids):
        assert ha[ids == c].sum() == pytest.approx((a == c).sum() * res[0] * res[1] / 1e4)
    assert set(names) <= {f"mixture {i}" for i in range(1, 5)} | {f"class {i}" for i in ids}
    again = hsimap("vectorize", maps / "scene_classes.tif", "-o", out)
    assert again.returncode == 1 and "exists; use --overwrite" in again.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["classes.gpkg"]


def test_a_stac_item_describes_the_set(trained: Trained, tmp_path):
    pystac = pytest.importorskip("pystac")
    from rasterio.warp import transform

    r = hsimap("predict", trained.made.scene, "-m", trained.model_dir, "-o", tmp_path,
               "--quiet", "--no-quicklooks", "--stac")
    assert r.returncode == 0, r.stderr
    item = pystac.Item.from_file(str(tmp_path / "scene_item.json"))
    assert item.id == "scene"
    files = {p.name for p in tmp_path.iterdir()} - {"scene_item.json"}
    # Every file of the set is an asset, the class map's .aux.xml (names, RAT) included.
    assert {Path(a.href).name for a in item.assets.values()} == files
    assert all(a.href.startswith("./") for a in item.assets.values())
    assert item.assets["classes"].roles == ["data"]
    with rasterio.open(trained.made.scene) as src:
        cx, cy = src.xy(src.height // 2, src.width // 2)
        (lon,), (lat,) = transform(src.crs, "EPSG:4326", [cx], [cy])
        assert item.properties["proj:code"] == f"EPSG:{src.crs.to_epsg()}"
        assert item.properties["proj:shape"] == [src.height, src.width]
    w, s, e, n = item.bbox
    assert w < lon < e and s < lat < n
    assert item.properties["hsimap:datetime_source"] == "file modification time"
    assert item.properties["hsimap:model_hash"] == trained.model.card.model_hash
    # A rerun without --stac drops the Item with the rest of the old set.
    r = hsimap("predict", trained.made.scene, "-m", trained.model_dir, "-o", tmp_path,
               "--quiet", "--no-quicklooks", "--overwrite")
    assert r.returncode == 0 and not (tmp_path / "scene_item.json").exists()
