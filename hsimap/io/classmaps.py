"""Class maps as GIS clients read them: category names and a thematic attribute table in the
``.aux.xml`` sidecar, class names in the band's metadata, and reading both back."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from xml.sax.saxutils import escape

import rasterio
from rasterio.errors import NotGeoreferencedWarning

from hsimap.classes import ClassTable, parse_color
from hsimap.errors import HsimapError


def category_aux_xml(table: ClassTable) -> str:
    """GDAL PAM sidecar with category names and a thematic raster attribute table.

    GeoTIFF keeps colour tables in the file but category names and attribute tables only in
    ``.aux.xml``; gdalinfo and QGIS read both from there.
    """
    top = max(table.ids)
    names = [table.zero] + [""] * top
    for i, n in zip(table.ids, table.names, strict=True):
        names[i] = n
    cats = "".join(f"<Category>{escape(n)}</Category>" for n in names)
    rows = []
    color = dict(zip(table.ids, table.colors, strict=True))
    for k, (i, n) in enumerate(zip([0, *table.ids], [table.zero, *table.names], strict=True)):
        r, g, b = color.get(i, (0, 0, 0))
        rows.append(f'<Row index="{k}"><F>{i}</F><F>{escape(n)}</F>'
                    f"<F>{r}</F><F>{g}</F><F>{b}</F></Row>")
    fields = [("Value", 0, 5), ("Class_Name", 2, 2), ("Red", 0, 6), ("Green", 0, 7),
              ("Blue", 0, 8)]
    defs = "".join(f'<FieldDefn index="{k}"><Name>{n}</Name><Type>{t}</Type><Usage>{u}</Usage>'
                   f"</FieldDefn>" for k, (n, t, u) in enumerate(fields))
    return (f'<PAMDataset><PAMRasterBand band="1"><CategoryNames>{cats}</CategoryNames>'
            f'<GDALRasterAttributeTable tableType="thematic">{defs}{"".join(rows)}'
            "</GDALRasterAttributeTable></PAMRasterBand></PAMDataset>\n")


CLASS_DTYPES = ("uint8", "uint16", "int16", "int32", "uint32")


def open_class_map(path: str | Path):
    """An open class map (rasterio dataset), refused in one line if unreadable or not of
    integers. GDAL's warning about a missing geotransform is left to the caller to judge."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        try:
            src = rasterio.open(path)
        except rasterio.errors.RasterioIOError:
            raise HsimapError(f"{path}: not a readable class map") from None
    if src.dtypes[0] not in CLASS_DTYPES:
        src.close()
        raise HsimapError(f"{path}: {src.dtypes[0]} values, not a class map (a confidence, "
                          "error or abundance raster?); give a *_classes.tif")
    from hsimap.io.probabilities import is_probabilities_dataset

    if is_probabilities_dataset(src):
        src.close()   # uint8 probabilities are integers, but not class ids
        raise HsimapError(f"{path}: a class-probabilities raster, not a class map; give the "
                          "*_classes.tif beside it")
    return src


NAMES_KEY, COLORS_KEY = "CLASS_NAMES", "CLASS_COLORS"


def class_metadata(table: ClassTable) -> dict[str, str]:
    """A class table as metadata items (JSON of id: name, id: #rrggbb): what a class map
    carries, in a GeoTIFF's tags or an xarray's attrs, and :func:`table_from_metadata` reads."""
    return {NAMES_KEY: json.dumps(dict(zip(map(str, table.ids), table.names, strict=True))),
            COLORS_KEY: json.dumps({str(i): "#{:02x}{:02x}{:02x}".format(*c)
                                    for i, c in zip(table.ids, table.colors, strict=True)})}


def table_from_metadata(items: dict, what: str = "the class map",
                        cmap: dict | None = None) -> ClassTable | None:
    """The class table of :func:`class_metadata`'s items (None without names); colours from
    ``cmap`` (a GeoTIFF's colour table) where given."""
    names, hexes = items.get(NAMES_KEY), items.get(COLORS_KEY)
    if not names:
        return None
    try:
        d = {int(k): str(v) for k, v in json.loads(names).items()}
        ids = sorted(d)
        if cmap:
            colors = [tuple(cmap[i][:3]) for i in ids]
        elif hexes:
            h = {int(k): v for k, v in json.loads(hexes).items()}
            colors = [parse_color(h[i]) for i in ids]
        else:
            colors = []
    except (ValueError, KeyError, AttributeError, TypeError, HsimapError):
        raise HsimapError(f"{what}: its CLASS_NAMES or CLASS_COLORS metadata is not valid "
                          "JSON of id: name (or id: #rrggbb)") from None
    return ClassTable(ids, [d[i] for i in ids], colors)


def read_class_table(path: str | Path) -> ClassTable | None:
    """The class table hsimap wrote into a class map (names and colours), if any: from the
    band's CLASS_NAMES item and colour table, or from the dataset's CLASS_NAMES and
    CLASS_COLORS items (what ``hsimap.predict(...).classes.rio.to_raster()`` writes)."""
    with rasterio.open(path) as src:
        items = {**src.tags(), **src.tags(1)}
        try:
            cmap = src.colormap(1)
        except ValueError:
            cmap = None
    return table_from_metadata(items, str(path), cmap)
