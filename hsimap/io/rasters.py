"""GIS-ready rasters: window-by-window sinks and whole-array writes.

Every writer goes through :class:`RasterSink`: windows are written into a hidden temporary file
beside the output, which on :meth:`RasterSink.commit` is copied into its final layout (tiled,
compressed GeoTIFF, or COG with overviews) and renamed. Until that rename nothing exists under
the final name, so an interrupted run never leaves a complete-looking file; and since the final
copy is laid out by GDAL in one sequential pass, the bytes do not depend on the order in which
worker threads wrote windows.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from hsimap.classes import ClassTable, class_dtype
from hsimap.errors import HsimapError
from hsimap.io.classmaps import (
    NAMES_KEY,
    category_aux_xml,
    class_metadata,
    table_from_metadata,
)
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
            dst.update_tags(1, **{NAMES_KEY: class_metadata(ct)[NAMES_KEY]})
        if self.tags:
            dst.update_tags(**self.tags)
        dst.close()
        self._closed = True
        if self.sieve > 1:
            self._sieve()
        try:
            # Refused or not at construction: an existing file is this run's to replace now.
            with atomic_output(self.path, overwrite=True) as staged:
                opts = self._finish_options()
                driver = opts.pop("driver")
                rasterio.shutil.copy(self._tmp, staged, driver=driver, **opts)
                if self.class_table is not None:
                    Path(str(staged) + ".aux.xml").write_text(
                        category_aux_xml(self.class_table))
        finally:
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


def write_class_map(classes, path: str | Path, *, overwrite: bool = False) -> Path:
    """A class map of :func:`hsimap.predict` (``ds.classes``) as hsimap's CLI writes one:
    paletted GeoTIFF with its colours, category names (``.aux.xml``) and QGIS style
    (``.qml``), atomically. ``ds.classes.rio.to_raster`` keeps the names and colours as
    metadata only, which hsimap reads back but QGIS does not draw."""
    from hsimap.io.files import check_output, with_extension
    from hsimap.io.qml import classes_qml

    table = table_from_metadata(classes.attrs, "the class map")
    if table is None:
        raise HsimapError("the class map has no CLASS_NAMES: write the classes of "
                          "hsimap.predict(...)")
    out = Path(path)
    check_output(out, overwrite)
    write_raster(out, classes.values, Grid.from_scene(classes), class_table=table)
    with_extension(out.with_suffix(""), ".qml").write_text(classes_qml(table))
    return out
