"""EMIT L2A reflectance as NASA's LP DAAC delivers it: one netCDF4 file per granule
(``EMIT_L2A_RFL_001_<time>_<orbit>_<scene>.nc``), with its mask product beside it
(``EMIT_L2A_MASK_...nc``) when the user downloaded that too.

What the product keeps where (NASA LP DAAC, EMIT L2A Estimated Surface Reflectance and
Uncertainty and Masks V001, doi:10.5067/EMIT/EMITL2ARFL.001, and its product user guide; the
files are netCDF4, HDF5 underneath, read with h5py):

- ``reflectance`` (downtrack, crosstrack, bands), float32, fill -9999: the cube in the
  instrument's geometry, not on a map grid.
- ``sensor_band_parameters/wavelengths``, ``fwhm`` (nm) and ``good_wavelengths`` (0 at the
  water-vapour bands, which hsimap marks bad).
- ``location/glt_x``, ``glt_y`` (ortho_y, ortho_x): the geometry lookup table. Map pixel
  (row, col) holds the swath pixel (glt_y - 1, glt_x - 1), 1-based; 0 means no swath pixel
  falls there. Global attributes ``geotransform`` (GDAL's six numbers) and ``spatial_ref``
  (WKT) place that grid.
- The mask product: ``mask`` (downtrack, crosstrack, mask_bands), named by
  ``sensor_band_parameters/mask_bands`` ("Cloud flag", "Cirrus flag", "Water flag",
  "Spacecraft Flag", "Dilated Cloud Flag", AOD550, H2O, "Aggregate Flag"); a flag is 1
  where set.

hsimap orthorectifies through the GLT window by window, as it reads: a map window's swath
pixels lie in a small box of the swath, which is read and gathered, so a granule is never read
whole. The scene is (band, y, x) on the GLT's map grid, as every other scene; the flagged
pixels of the chosen mask layers (default: cloud, cirrus, dilated cloud and spacecraft, the
flags that hide the surface) become a ``quality_mask`` coordinate, as EnMAP's do.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hsimap.errors import HsimapError
from hsimap.io.lazy import LazyCube

FILL = -9999.0
DEFAULT_MASK = ("cloud", "cirrus", "dilated_cloud", "spacecraft")
MAX_BANDS = 1000


def _flag_key(name: str) -> str | None:
    """A mask band's name as ``--mask`` spells it ("Dilated Cloud Flag" -> dilated_cloud);
    None for the bands that are not flags (AOD550, H2O)."""
    if not re.search(r"(?i)\bflag\b", name):
        return None
    return re.sub(r"(?i)\s*\bflag\b\s*", "", name).strip().lower().replace(" ", "_")


def _h5(path: Path):
    import h5py

    return h5py.File(path, "r")


def is_emit(path: Path) -> bool:
    """Whether ``path`` is an EMIT L2A reflectance file (netCDF4/HDF5 with a reflectance cube
    and a GLT)."""
    if path.suffix.lower() != ".nc" or not path.is_file():
        return False
    try:
        with _h5(path) as f:
            return "reflectance" in f and "location/glt_x" in f and "location/glt_y" in f
    except OSError:
        return False


def mask_path(path: Path) -> Path | None:
    """The granule's mask product beside it, when there."""
    if "_RFL_" not in path.name:
        return None
    other = path.with_name(path.name.replace("_RFL_", "_MASK_"))
    return other if other.is_file() else None


def parse_mask(text: str | None) -> tuple[str, ...] | None:
    """``--mask`` as flag names ("cloud,cirrus", "none"); None: the default layers."""
    if text is None:
        return None
    names = tuple(t.strip().lower() for t in text.split(",") if t.strip())
    return () if names in ((), ("none",)) else names


@dataclass
class Orthorectified(LazyCube):
    """The reflectance cube on the GLT's map grid: (bands, rows, cols), float32, FILL where no
    swath pixel falls. Each read opens the file, reads the GLT of its window and the swath box
    its pixels come from, and gathers."""

    swath: tuple[int, int] = (0, 0)

    def read(self, bands: slice, rows: slice, cols: slice) -> np.ndarray:
        nb = len(range(*bands.indices(self.shape[0])))
        h = len(range(*rows.indices(self.shape[1])))
        w = len(range(*cols.indices(self.shape[2])))
        out = np.full((nb, h, w), FILL, np.float32)
        with _h5(self.path) as f:
            gx = np.abs(f["location/glt_x"][rows, cols].astype(np.int64))
            gy = np.abs(f["location/glt_y"][rows, cols].astype(np.int64))
            hit = (gx > 0) & (gy > 0)
            if hit.any():
                ys, xs = gy[hit] - 1, gx[hit] - 1
                y0, x0 = ys.min(), xs.min()
                box = f["reflectance"][y0:ys.max() + 1, x0:xs.max() + 1, bands]
                out[:, hit] = box[ys - y0, xs - x0].T
        return out


def _check_glt(path: Path, glt_x: np.ndarray, glt_y: np.ndarray, swath: tuple[int, int]):
    gx, gy = np.abs(glt_x), np.abs(glt_y)
    if gy.max(initial=0) > swath[0] or gx.max(initial=0) > swath[1]:
        raise HsimapError(f"{path}: its GLT points outside the {swath[0]} x {swath[1]} swath "
                          "(a damaged or mismatched file)")
    if not ((gx > 0) & (gy > 0)).any():
        raise HsimapError(f"{path}: its GLT places no swath pixel on the map grid")


def _quality_mask(path: Path, mask: tuple[str, ...] | None, glt_x: np.ndarray,
                  glt_y: np.ndarray, swath: tuple[int, int]) -> tuple[np.ndarray | None, str]:
    """The ortho-grid mask of the chosen flags, and their names; (None, "") when none."""
    chosen = DEFAULT_MASK if mask is None else mask
    if not chosen:
        return None, ""
    other = mask_path(path)
    if other is None:
        if mask is None:
            warnings.warn(f"{path.name}: no EMIT_L2A_MASK file beside it: clouds are not "
                          "masked (download the granule's mask product, or give --mask none)",
                          stacklevel=4)
            return None, ""
        raise HsimapError(f"{path}: --mask needs the granule's EMIT_L2A_MASK file beside it")
    with _h5(other) as f:
        if "mask" not in f or "sensor_band_parameters/mask_bands" not in f:
            raise HsimapError(f"{other}: not an EMIT L2A mask file (no mask or mask_bands)")
        names = [n.decode() if isinstance(n, bytes) else str(n)
                 for n in f["sensor_band_parameters/mask_bands"][()]]
        keys = {_flag_key(n): i for i, n in enumerate(names) if _flag_key(n)}
        bad = [c for c in chosen if c not in keys]
        if bad:
            raise HsimapError(f"--mask: {bad[0]} is no EMIT mask flag; choose from "
                              f"{', '.join(keys)} (or none)")
        data = f["mask"]
        if data.shape[:2] != swath:
            raise HsimapError(f"{other}: mask is {data.shape[0]} x {data.shape[1]}, the "
                              f"reflectance {swath[0]} x {swath[1]}: not the same granule")
        flagged = np.zeros(swath, bool)
        for c in chosen:
            flagged |= data[:, :, keys[c]] == 1
    gx, gy = np.abs(glt_x), np.abs(glt_y)
    hit = (gx > 0) & (gy > 0)
    ortho = np.zeros(glt_x.shape, bool)
    ortho[hit] = flagged[gy[hit] - 1, gx[hit] - 1]
    return ortho, ",".join(chosen)


def open_product(path: Path, *, chunks: int, mask: tuple[str, ...] | None):
    """The granule as ``(cube, meta, attrs, transform, crs)``: a lazy (bands, rows, cols)
    array on the GLT's map grid, band metadata, the product's attributes and the grid's
    georeferencing. :func:`hsimap.io.scene.open_scene` makes the scene of them."""
    from affine import Affine

    try:
        with _h5(path) as f:
            swath = tuple(f["reflectance"].shape[:2])
            bands = f["reflectance"].shape[2]
            if bands > MAX_BANDS:
                raise HsimapError(f"{path}: {bands} bands; not an EMIT reflectance file")
            params = f.get("sensor_band_parameters")
            if params is None or "wavelengths" not in params:
                raise HsimapError(f"{path}: no sensor_band_parameters/wavelengths")
            wl = np.asarray(params["wavelengths"][()], float)
            fwhm = np.asarray(params["fwhm"][()], float) if "fwhm" in params else None
            good = np.asarray(params["good_wavelengths"][()]) if "good_wavelengths" in params \
                else np.ones(bands)
            glt_x = f["location/glt_x"][()]
            glt_y = f["location/glt_y"][()]
            gt = f.attrs.get("geotransform")
            wkt = f.attrs.get("spatial_ref")
            start = f.attrs.get("time_coverage_start")
    except OSError as exc:
        raise HsimapError(f"{path}: cannot read it as netCDF4/HDF5 ({exc})") from None
    except KeyError as exc:
        raise HsimapError(f"{path}: not an EMIT L2A file ({exc})") from None
    if len(wl) != bands or (fwhm is not None and len(fwhm) != bands) or len(good) != bands:
        raise HsimapError(f"{path}: {bands} bands but {len(wl)} wavelengths: a damaged file")
    if gt is None or len(gt) != 6 or wkt is None:
        raise HsimapError(f"{path}: no geotransform or spatial_ref attribute: cannot place "
                          "the GLT's grid")
    _check_glt(path, glt_x, glt_y, swath)
    quality, layers = _quality_mask(path, mask, glt_x, glt_y, swath)
    cube = Orthorectified(path, (bands, *glt_x.shape), swath)
    meta = {"wavelength": wl, "fwhm": fwhm, "bad_band": np.asarray(good) == 0,
            "nodata": FILL, "scale_factor": 1.0, "add_offset": 0.0}
    attrs = {"product": "EMIT L2A", "metadata": str(path),
             "grid": "the granule's GLT map grid (its geotransform and spatial_ref), nearest "
                     "swath pixel per map pixel"}
    if isinstance(start, bytes):
        start = start.decode()
    if start:
        attrs["acquisition_time"] = str(start)
    if quality is not None:
        attrs.update(quality_layers=layers, quality_masked_pixels=int(quality.sum()))
    wkt = wkt.decode() if isinstance(wkt, bytes) else str(wkt)
    return cube, meta, attrs, Affine.from_gdal(*map(float, gt)), wkt, quality
