"""The VRT mosaic of a batch's class maps: one file GDAL, QGIS and hsimap read as one map."""

from __future__ import annotations

import json
import os
from pathlib import Path
from xml.sax.saxutils import escape

import rasterio

from hsimap.errors import HsimapError
from hsimap.io.classmaps import read_class_table
from hsimap.io.files import atomic_output
from hsimap.io.grid import Grid
from hsimap.io.qml import classes_qml


def write_vrt(class_maps: list[Path], path: Path, overwrite: bool = False) -> Path:
    """A GDAL VRT mosaic of class maps that share CRS and pixel size (and its QGIS style),
    each file complete or not at all; an existing one is refused unless ``overwrite``.

    Where lines overlap, the first map in ``class_maps`` with data wins: a map's nodata (0,
    outside its swath) never paints over another map's pixels. Colours and class names come
    from the first map.
    """
    if not class_maps:
        raise HsimapError("no class maps to mosaic")
    infos = []
    for p in class_maps:
        with rasterio.open(p) as src:
            infos.append((p, src.crs, src.transform, src.width, src.height, src.dtypes[0],
                          src.colormap(1)))
    _, crs, t0, _, _, dtype, cmap = infos[0]
    grids = [Grid(w, h, c, t) for _, c, t, w, h, _, _ in infos]
    for (p, *_), g in zip(infos, grids, strict=True):
        if not g.aligned_with(grids[0]):
            raise HsimapError(f"{p}: CRS or pixel size differs from {infos[0][0]}; "
                              "no VRT written")
    mosaic = grids[0].union(grids[1:])
    width, height = mosaic.width, mosaic.height
    left, top = mosaic.transform.c, mosaic.transform.f
    gdt = {"uint8": "Byte", "uint16": "UInt16"}[dtype]
    table = read_class_table(infos[0][0])
    # The colour table up to the largest class only: GDAL pads a Byte palette to 256 entries,
    # and QGIS shows every entry of the table as a legend item.
    last = max(table.ids) if table is not None else max(cmap)
    colors = "".join(f'<Entry c1="{r}" c2="{g}" c3="{b}" c4="{a}"/>'
                     for i, (r, g, b, a) in sorted(cmap.items()) if i <= last)
    names = ""
    if table is not None:
        cats = ["unclassified"] + [""] * max(table.ids)
        for i, n in zip(table.ids, table.names, strict=True):
            cats[i] = n
        ids_names = json.dumps(dict(zip(map(str, table.ids), table.names, strict=True)))
        names = ("<CategoryNames>" + "".join(f"<Category>{escape(n)}</Category>"
                                             for n in cats) + "</CategoryNames>"
                 f'<Metadata><MDI key="CLASS_NAMES">{escape(ids_names)}</MDI></Metadata>')
    sources = []
    # GDAL draws sources in order, each over the last: the first map is drawn last to win.
    for p, _, t, w, h, _, _ in reversed(infos):
        xo, yo = round((t.c - left) / t0.a), round((t.f - top) / t0.e)
        rel = os.path.relpath(p, path.parent)
        sources.append(
            f'<ComplexSource><SourceFilename relativeToVRT="1">{escape(rel)}</SourceFilename>'
            f'<SourceBand>1</SourceBand><SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>'
            f'<DstRect xOff="{xo}" yOff="{yo}" xSize="{w}" ySize="{h}"/>'
            f"<NODATA>0</NODATA></ComplexSource>")
    xml = (f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">'
           f"<SRS>{escape(crs.to_wkt()) if crs else ''}</SRS>"
           f"<GeoTransform>{left}, {t0.a}, 0, {top}, 0, {t0.e}</GeoTransform>"
           f'<VRTRasterBand dataType="{gdt}" band="1"><NoDataValue>0</NoDataValue>'
           f"<ColorInterp>Palette</ColorInterp>{names}<ColorTable>{colors}</ColorTable>"
           f"{''.join(sources)}</VRTRasterBand></VRTDataset>\n")
    if table is not None:  # the style QGIS loads with the mosaic, as beside every class map
        with atomic_output(path.with_suffix(".qml"), overwrite) as tmp:
            tmp.write_text(classes_qml(table))
    with atomic_output(path, overwrite) as tmp:
        tmp.write_text(xml)
    return path
