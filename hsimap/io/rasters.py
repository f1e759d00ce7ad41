"""GIS-ready rasters: window-by-window sinks, whole-array writes, class tables, the VRT mosaic.

Every writer goes through :class:`RasterSink`: windows are written into a hidden temporary file
beside the output, which on :meth:`RasterSink.commit` is copied into its final layout (tiled,
compressed GeoTIFF, or COG with overviews) and renamed. Until that rename nothing exists under
the final name, so an interrupted run never leaves a complete-looking file; and since the final
copy is laid out by GDAL in one sequential pass, the bytes do not depend on the order in which
worker threads wrote windows.
"""

from __future__ import annotations

import json
import os
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from hsimap.classes import ClassTable, class_dtype, parse_color
from hsimap.errors import HsimapError
from hsimap.io.files import atomic_output, check_output, remove, temp_name
from hsimap.io.grid import Grid  # noqa: F401  (re-exported: io.rasters.Grid is public)


class RasterSink:
    """A raster written window by window, appearing under its final name only when complete.

    Args:
        path: final file name (``.tif``).
        grid: the input's grid; CRS and transform are copied exactly.
        count: number of bands.
        dtype: numpy dtype name.
        nodata: nodata value (``nan`` for float rasters, 0 for class maps).
        cog: write a Cloud Optimized GeoTIFF with overviews.
        overwrite: replace an existing file.
        descriptions: band descriptions (endmember names, ...).
        class_table: makes this a class map: colour table, category names, attribute table.
        tags: dataset metadata items.
        creation_options: extra GDAL creation options (``--co``).
        categorical: overviews by nearest neighbour (class maps) rather than averaging.
        units: band unit types ("fraction", "radians").
        sieve: minimum mapping unit, pixels: before the file is laid out, patches smaller
            than this (8-connected) take their largest neighbour's value; 0 (nodata) stays.
        scale: GDAL scale factor of every band (value = stored x scale), for rasters stored
            as scaled integers.
    """

    def __init__(self, path: str | Path, grid: Grid, count: int, dtype: str, *,
                 nodata: float | None, cog: bool = False, overwrite: bool = False,
                 descriptions: Sequence[str] | None = None, class_table: ClassTable | None = None,
                 tags: dict[str, str] | None = None,
                 creation_options: dict[str, str] | None = None, categorical: bool = False,
                 units: Sequence[str | None] | None = None, sieve: int = 0,
                 scale: float | None = None):
        self.path = Path(path)
        check_output(self.path, overwrite)
        self.grid, self.count, self.dtype, self.nodata = grid, count, dtype, nodata
        self.cog, self.categorical = cog, categorical or class_table is not None
        self.descriptions, self.class_table = descriptions, class_table
        self.tags = tags or {}
        self.units, self.sieve, self.scale = units, sieve, scale
        self.creation_options = creation_options or {}
        self._tmp = temp_name(self.path)
        self._lock = threading.Lock()
        profile = dict(driver="GTiff", width=grid.width, height=grid.height, count=count,
                       dtype=dtype, nodata=nodata, BIGTIFF="IF_SAFER")
        if grid.has_transform:
            profile.update(crs=grid.crs, transform=grid.transform)
        if min(grid.width, grid.height) >= 256:
            profile.update(tiled=True, blockxsize=256, blockysize=256)
        if class_table is not None:
            profile["photometric"] = "palette"
        with warnings.catch_warnings():
            # Scenes without georeferencing (.mat) give outputs without it too; that is fine.
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            self._dst = rasterio.open(self._tmp, "w", **profile)
        if grid.gcps is not None:
            self._dst.gcps = grid.gcps
        if class_table is not None:
            # GDAL fixes the photometric interpretation at the first write: colours come first.
            cmap = {0: (0, 0, 0, 0)}
            cmap.update({i: (*c, 255) for i, c in zip(class_table.ids, class_table.colors,
                                                      strict=True)})
            self._dst.write_colormap(1, cmap)
        self._closed = False

    def write(self, array: np.ndarray, row: int, col: int) -> None:
        """Write ``array`` ((bands, h, w) or (h, w)) with its top-left corner at (row, col)."""
        a = array if array.ndim == 3 else array[None]
        window = Window(col, row, a.shape[2], a.shape[1])
        # Windows are written from worker threads: GDAL's error handler is per thread, and
        # without an Env here a failed block write is printed raw ("ERROR 1: ...").
        with self._lock, rasterio.Env():
            self._dst.write(a.astype(self.dtype, copy=False), window=window)

    def _finish_options(self) -> dict[str, Any]:
        float_raster = np.dtype(self.dtype).kind == "f"
        opts: dict[str, Any] = {"COMPRESS": "DEFLATE", "BIGTIFF": "IF_SAFER",
                                "PREDICTOR": "3" if float_raster else "2"}
        if self.cog:
            opts.update(driver="COG", OVERVIEWS="AUTO", BLOCKSIZE="512",
                        RESAMPLING="NEAREST" if self.categorical else "AVERAGE")
        else:
            opts.update(driver="GTiff", TILED="YES", BLOCKXSIZE="256", BLOCKYSIZE="256")
        opts.update(self.creation_options)
        return opts

    def commit(self) -> Path:
        """Lay the file out in its final format and move it to its final name."""
        dst = self._dst
        if self.descriptions:
            for i, d in enumerate(self.descriptions, start=1):
                if d:
                    dst.set_band_description(i, d)
        for i, u in enumerate(self.units or [], start=1):
            if u:
                dst.set_band_unit(i, u)
        if self.scale is not None:
            dst.scales = [self.scale] * self.count
            dst.offsets = [0.0] * self.count
        if self.class_table is not None:
            ct = self.class_table
            dst.update_tags(1, CLASS_NAMES=json.dumps(dict(zip(map(str, ct.ids), ct.names,
                                                                 strict=True))))
        if self.tags:
            dst.update_tags(**self.tags)
        dst.close()
        self._closed = True
        if self.sieve > 1:
            self._sieve()
        staged = temp_name(self.path)
        try:
            opts = self._finish_options()
            driver = opts.pop("driver")
            rasterio.shutil.copy(self._tmp, staged, driver=driver, **opts)
            if self.class_table is not None:
                Path(str(staged) + ".aux.xml").write_text(category_aux_xml(self.class_table))
                os.replace(str(staged) + ".aux.xml", str(self.path) + ".aux.xml")
            os.replace(staged, self.path)
        except BaseException:
            remove(staged, self._tmp)
            raise
        remove(self._tmp)
        return self.path

    def _sieve(self) -> None:
        """Apply the minimum mapping unit to the whole band. It needs the band in memory (one
        or two bytes a pixel for class maps): patches cross window borders."""
        from rasterio.features import sieve

        with rasterio.open(self._tmp, "r+") as dst:
            band = dst.read(1)
            out = sieve(band, self.sieve, mask=band != 0, connectivity=8)
            dst.write(np.where(band != 0, out, 0).astype(band.dtype), 1)

    def abort(self) -> None:
        """Drop the partial file; nothing remains under either name."""
        if not self._closed:
            self._dst.close()
            self._closed = True
        remove(self._tmp)

    def __enter__(self) -> RasterSink:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._closed:
            self.commit()


def category_aux_xml(table: ClassTable) -> str:
    """GDAL PAM sidecar with category names and a thematic raster attribute table.

    GeoTIFF keeps colour tables in the file but category names and attribute tables only in
    ``.aux.xml``; gdalinfo and QGIS read both from there.
    """
    top = max(table.ids)
    names = ["unclassified"] + [""] * top
    for i, n in zip(table.ids, table.names, strict=True):
        names[i] = n
    cats = "".join(f"<Category>{escape(n)}</Category>" for n in names)
    rows = []
    color = dict(zip(table.ids, table.colors, strict=True))
    for k, (i, n) in enumerate(zip([0, *table.ids], ["unclassified", *table.names], strict=True)):
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


def write_raster(path: str | Path, array: np.ndarray, grid: Grid, **kwargs: Any) -> Path:
    """Write a whole in-memory array through a :class:`RasterSink` (same guarantees).

    Class maps: pass ``class_table`` (dtype and nodata follow). Float maps: float32, NaN nodata.
    """
    a = array if array.ndim == 3 else array[None]
    table = kwargs.get("class_table")
    if table is not None:
        kwargs.setdefault("dtype", class_dtype(table))
        kwargs.setdefault("nodata", 0)
    else:
        kwargs.setdefault("dtype", "float32")
        kwargs.setdefault("nodata", float("nan"))
    dtype = kwargs.pop("dtype")
    with RasterSink(path, grid, a.shape[0], dtype, **kwargs) as sink:
        sink.write(a, 0, 0)
    return Path(path)


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
        from hsimap.io.qml import classes_qml

        with atomic_output(path.with_suffix(".qml"), overwrite) as tmp:
            tmp.write_text(classes_qml(table))
    with atomic_output(path, overwrite) as tmp:
        tmp.write_text(xml)
    return path
