"""GIS-ready rasters: class maps, abundances and single-band float maps.

Every writer goes through :class:`RasterSink`: windows are written into a hidden temporary file
beside the output, which on :meth:`RasterSink.commit` is copied into its final layout (tiled,
compressed GeoTIFF, or COG with overviews) and renamed. Until that rename nothing exists under
the final name, so an interrupted run never leaves a complete-looking file; and since the final
copy is laid out by GDAL in one sequential pass, the bytes do not depend on the order in which
worker threads wrote windows.
"""

from __future__ import annotations

import csv
import json
import os
import threading
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from hsimap.errors import HsimapError

# A qualitative palette that stays readable on a map (tab20-like, starting with strong hues).
_PALETTE = [
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
    (174, 199, 232), (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213),
    (196, 156, 148), (247, 182, 210), (199, 199, 199), (219, 219, 141), (158, 218, 229),
]


@dataclass(frozen=True)
class Grid:
    """A raster grid: size, CRS and affine transform (GDAL's names)."""

    width: int
    height: int
    crs: CRS | None
    transform: Affine

    @classmethod
    def from_scene(cls, scene: Any) -> Grid:
        return cls(scene.sizes["x"], scene.sizes["y"], scene.rio.crs, scene.rio.transform())


@dataclass
class ClassTable:
    """Class ids (1..C; 0 is no data / unclassified), names and RGB colours."""

    ids: list[int]
    names: list[str]
    colors: list[tuple[int, int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.colors:
            self.colors = [_PALETTE[i % len(_PALETTE)] for i in range(len(self.ids))]

    @classmethod
    def default(cls, ids: Sequence[int]) -> ClassTable:
        return cls([int(i) for i in ids], [f"class {int(i)}" for i in ids])

    @classmethod
    def from_csv(cls, path: str | Path) -> ClassTable:
        """Read ``id,name,color`` rows; color as ``#rrggbb`` or ``r g b``; header optional."""
        ids, names, colors = [], [], []
        with open(path, newline="", encoding="utf-8-sig") as f:
            for row in csv.reader(f):
                if not row or row[0].strip().lower() in ("id", "value", "class"):
                    continue
                try:
                    ids.append(int(row[0]))
                except ValueError:
                    raise HsimapError(f"{path}: class id {row[0]!r} is not an integer") from None
                names.append(row[1].strip() if len(row) > 1 else f"class {row[0]}")
                colors.append(parse_color(row[2]) if len(row) > 2 and row[2].strip() else None)
        if not ids:
            raise HsimapError(f"{path}: no classes (expected rows id,name,color)")
        table = cls(ids, names)
        table.colors = [c or d for c, d in zip(colors, table.colors, strict=True)]
        return table

    def to_dict(self) -> dict[str, Any]:
        return {"ids": self.ids, "names": self.names, "colors": [list(c) for c in self.colors]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClassTable:
        return cls(list(d["ids"]), list(d["names"]), [tuple(c) for c in d["colors"]])

    def name_of(self, class_id: int) -> str:
        return self.names[self.ids.index(class_id)] if class_id in self.ids else f"class {class_id}"


def parse_color(text: str) -> tuple[int, int, int]:
    t = text.strip()
    if t.startswith("#") and len(t) == 7:
        return (int(t[1:3], 16), int(t[3:5], 16), int(t[5:7], 16))
    parts = t.replace(",", " ").split()
    if len(parts) == 3:
        return tuple(int(p) for p in parts)  # type: ignore[return-value]
    raise HsimapError(f"colour {text!r}: expected #rrggbb or 'r g b'")


def check_output(path: Path, overwrite: bool) -> None:
    """Refuse to replace an existing output unless asked to; check the folder is writable."""
    if path.exists() and not overwrite:
        raise HsimapError(f"{path}: exists; use --overwrite to replace it")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise HsimapError(f"{parent}: output folder does not exist")
    if not os.access(parent, os.W_OK):
        raise HsimapError(f"{parent}: output folder is not writable")


def temp_name(path: Path) -> Path:
    """A hidden name beside ``path`` that no complete output ever has."""
    return path.with_name(f".{path.name}.partial-{uuid.uuid4().hex[:8]}{path.suffix}")


def _remove(*paths: Path) -> None:
    for p in paths:
        for q in (p, Path(str(p) + ".aux.xml")):
            try:
                q.unlink()
            except FileNotFoundError:
                pass


def parse_creation_options(items: Sequence[str]) -> dict[str, str]:
    """``NAME=VALUE`` strings (from ``--co``) to a dict GDAL takes."""
    out = {}
    for item in items:
        if "=" not in item:
            raise HsimapError(f"creation option {item!r}: expected NAME=VALUE")
        k, v = item.split("=", 1)
        out[k.strip().upper()] = v.strip()
    return out


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
    """

    def __init__(self, path: str | Path, grid: Grid, count: int, dtype: str, *,
                 nodata: float | None, cog: bool = False, overwrite: bool = False,
                 descriptions: Sequence[str] | None = None, class_table: ClassTable | None = None,
                 tags: dict[str, str] | None = None,
                 creation_options: dict[str, str] | None = None, categorical: bool = False):
        self.path = Path(path)
        check_output(self.path, overwrite)
        self.grid, self.count, self.dtype, self.nodata = grid, count, dtype, nodata
        self.cog, self.categorical = cog, categorical or class_table is not None
        self.descriptions, self.class_table = descriptions, class_table
        self.tags = tags or {}
        self.creation_options = creation_options or {}
        self._tmp = temp_name(self.path)
        self._lock = threading.Lock()
        profile = dict(driver="GTiff", width=grid.width, height=grid.height, count=count,
                       dtype=dtype, crs=grid.crs, transform=grid.transform, nodata=nodata,
                       BIGTIFF="IF_SAFER")
        if min(grid.width, grid.height) >= 256:
            profile.update(tiled=True, blockxsize=256, blockysize=256)
        if class_table is not None:
            profile["photometric"] = "palette"
        with warnings.catch_warnings():
            # Scenes without georeferencing (.mat) give outputs without it too; that is fine.
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            self._dst = rasterio.open(self._tmp, "w", **profile)
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
        with self._lock:
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
                dst.set_band_description(i, d)
        if self.class_table is not None:
            ct = self.class_table
            dst.update_tags(1, CLASS_NAMES=json.dumps(dict(zip(map(str, ct.ids), ct.names,
                                                                 strict=True))))
        if self.tags:
            dst.update_tags(**self.tags)
        dst.close()
        self._closed = True
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
            _remove(staged, self._tmp)
            raise
        _remove(self._tmp)
        return self.path

    def abort(self) -> None:
        """Drop the partial file; nothing remains under either name."""
        if not self._closed:
            self._dst.close()
            self._closed = True
        _remove(self._tmp)

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


def class_dtype(table: ClassTable) -> str:
    return "uint8" if max(table.ids) <= 255 else "uint16"


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


def read_class_table(path: str | Path) -> ClassTable | None:
    """The class table hsimap wrote into a class map (names and colours), if any."""
    with rasterio.open(path) as src:
        names = src.tags(1).get("CLASS_NAMES")
        try:
            cmap = src.colormap(1)
        except ValueError:
            cmap = None
    if names:
        d = {int(k): v for k, v in json.loads(names).items()}
        ids = sorted(d)
        colors = [tuple(cmap[i][:3]) for i in ids] if cmap else []
        return ClassTable(ids, [d[i] for i in ids], colors)
    return None
