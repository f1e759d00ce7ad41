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
        raise HsimapError(f"{path}: a class map holds integers, this holds {src.dtypes[0]}")
    return src


def read_class_table(path: str | Path) -> ClassTable | None:
    """The class table hsimap wrote into a class map (names and colours), if any: from the
    band's CLASS_NAMES item and colour table, or from the dataset's CLASS_NAMES and
    CLASS_COLORS items (what ``hsimap.predict(...).classes.rio.to_raster()`` writes)."""
    with rasterio.open(path) as src:
        names = src.tags(1).get("CLASS_NAMES") or src.tags().get("CLASS_NAMES")
        hexes = src.tags().get("CLASS_COLORS")
        try:
            cmap = src.colormap(1)
        except ValueError:
            cmap = None
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
    except (ValueError, KeyError, AttributeError, HsimapError):
        raise HsimapError(f"{path}: its CLASS_NAMES or CLASS_COLORS metadata is not valid "
                          "JSON of id: name (or id: #rrggbb)") from None
    return ClassTable(ids, [d[i] for i in ids], colors)
