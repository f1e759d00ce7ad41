"""A class map as polygons: one feature per connected patch, with its class and area.

Polygons come from GDAL's polygonize (:func:`rasterio.features.shapes`, 8-connected), in the
map's CRS; the file is written by pyogrio (GeoPackage by default, or what the extension names).
The whole class map is read at once, one or two bytes a pixel: patches cross any window.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hsimap.classes import ClassTable
from hsimap.errors import HsimapError
from hsimap.io.classmaps import open_class_map, read_class_table
from hsimap.io.files import atomic_output, check_output, refuse_inputs, with_extension
from hsimap.io.points import store_default_style
from hsimap.io.qml import polygons_qml

# GeoPackage 1.2, not GDAL 3.10's default 1.4: QGIS 3.22 (GDAL 3.6, Debian 12's LTR) warns on
# every open of a 1.4 file that it "may only be partially supported".
DATASET_OPTIONS = {"GPKG": {"dataset_options": {"VERSION": "1.2"}}}
DRIVERS = {".gpkg": "GPKG", ".fgb": "FlatGeobuf", ".geojson": "GeoJSON", ".shp": "ESRI Shapefile"}


@dataclass
class VectorizeReport:
    path: Path
    features: int
    classes: int


def vectorize(classes: str | Path, output: str | Path, *, mmu: int = 0,
              overwrite: bool = False) -> VectorizeReport:
    """Write the patches of the class map ``classes`` to ``output`` as polygons with
    ``class_id``, ``class_name`` and ``area_ha`` (null without a CRS); nodata (0) is left out.

    ``mmu``: patches smaller than this many pixels first take their largest neighbour's class.
    """
    import pyogrio
    import shapely
    from rasterio.features import shapes, sieve

    out = Path(output)
    driver = DRIVERS.get(out.suffix.lower())
    if driver is None:
        raise HsimapError(f"{out}: name the output .gpkg, .fgb, .geojson or .shp")
    if mmu < 0:
        raise HsimapError(f"--mmu must be non-negative, got {mmu}")
    refuse_inputs({"-o": out}, [classes])
    check_output(out, overwrite)
    with open_class_map(classes) as src:
        band = src.read(1)
        transform, crs = src.transform, src.crs
    table = read_class_table(classes)
    nodata = band == 0
    if mmu > 1:
        band = np.where(nodata, 0, sieve(band, mmu, mask=~nodata, connectivity=8))
    # GDAL polygonizes 32-bit signed values: ids are traced as their index among the map's
    # classes, so that an id above 2^31 (uint32 maps) keeps its value.
    values, index = np.unique(band, return_inverse=True)
    polys, ids = [], []
    for geom, k in shapes(index.reshape(band.shape).astype(np.int32), mask=~nodata,
                          connectivity=8, transform=transform):
        polys.append(shapely.geometry.shape(geom))
        ids.append(int(values[int(k)]))
    if not polys:
        raise HsimapError(f"{classes}: no classified pixels to vectorize")
    geoms = _valid_multipolygons(polys)
    names = np.array([table.name_of(i) if table else f"class {i}" for i in ids], dtype=object)
    hectares = _hectares(geoms, crs)
    # A shapefile's sidecars (.dbf, .shx, .prj) carry the temporary stem and move with it.
    with atomic_output(out, overwrite) as tmp:
        pyogrio.raw.write(tmp, shapely.to_wkb(geoms),
                          [np.array(ids, np.int64 if max(ids) > 2**31 - 1 else np.int32), names,
                           hectares],
                          fields=["class_id", "class_name", "area_ha"],
                          geometry_type="MultiPolygon",
                          crs=crs.to_wkt() if crs else None, driver=driver, layer=out.stem,
                          **DATASET_OPTIONS.get(driver, {}))
        style = polygons_qml(table or ClassTable.default(sorted(set(ids))))
        if driver == "GPKG":
            store_default_style(tmp, out.stem, style)
        else:   # beside a file of another format, QGIS loads <name>.qml
            with_extension(tmp.with_suffix(""), ".qml").write_text(style)
    return VectorizeReport(out, len(polys), len(set(ids)))


def _valid_multipolygons(polys: list) -> np.ndarray:
    """8-connected patches touch at corners, and their rings then cross themselves: invalid
    polygons, which QGIS's Clip and Dissolve refuse. Repaired (shapely's make_valid keeps the
    area), and written as MultiPolygons, one type for every feature."""
    import shapely

    out = []
    for g in shapely.make_valid(np.array(polys, dtype=object)):
        parts = [p for p in shapely.get_parts(g) if p.geom_type in ("Polygon", "MultiPolygon")]
        flat = [q for p in parts for q in shapely.get_parts(p)]
        out.append(shapely.MultiPolygon(flat))
    return np.array(out, dtype=object)


def _hectares(geoms: np.ndarray, crs) -> np.ndarray:
    if crs is None:
        return np.full(len(geoms), np.nan)
    if crs.is_projected:
        import shapely

        return shapely.area(geoms) * crs.linear_units_factor[1] ** 2 / 1e4
    from hsimap.io.grid import geod_of

    geod = geod_of(crs)   # WGS84 where the CRS names no ellipsoid, as for mapped areas
    return np.array([abs(geod.geometry_area_perimeter(g)[0]) / 1e4 for g in geoms])
