"""PRISMA L2D surface reflectance as ASI delivers it: one HDF5-EOS file per scene
(``PRS_L2D_STD_<start>_<stop>_0001.he5``), geocoded on a UTM grid.

What the product keeps where (ASI, PRISMA Products Specification Document, issue 2.3,
12/03/2020, sections on the L2D product; the same paths and conventions as EnMAP-Box's
``ImportPrismaL2DAlgorithm``, the importer most PRISMA users rely on):

- ``HDFEOS/SWATHS/PRS_L2D_HCO/Data Fields/VNIR_Cube`` and ``SWIR_Cube``: uint16, stored
  (rows, bands, cols), band-interleaved by line. The first row is the grid's north edge.
- Root attributes ``List_Cw_Vnir`` / ``List_Fwhm_Vnir`` (66 values) and ``List_Cw_Swir`` /
  ``List_Fwhm_Swir`` (173 values), in the cube's band order, which is **decreasing**
  wavelength; a 0 marks a slot with no band. ``List_Cw_Vnir_Flags`` / ``List_Cw_Swir_Flags``,
  when present: 0 marks a band the processor flags as unusable (hsimap makes it a bad band).
- ``L2ScaleVnirMin`` / ``L2ScaleVnirMax`` (and ``Swir``): reflectance = Min + DN x (Max - Min)
  / 65535. DN 0 in every band is the product's no-data (outside the acquisition).
- ``Epsg_Code``, ``Product_ULcorner_easting`` / ``_northing`` and ``Product_LRcorner_*``: the
  corner **pixels' centres** (EnMAP-Box reads them so since it fixed its 15 m shift: taking
  them as the grid's edges moves every output half a pixel). The pixel size is what the
  corners and the cube's size give (30 m on every product).
- ``Product_StartTime``: the acquisition time.
- ``VNIR_PIXEL_L2_ERR_MATRIX`` / ``SWIR_PIXEL_L2_ERR_MATRIX`` (same shape as the cubes): per
  pixel and band, 0 good, 1 invalid pixel of the L1 product, 2 negative reflectance after
  the atmospheric correction, 4 saturated. hsimap's quality mask: a pixel is nodata when a
  band hsimap uses carries a chosen flag (default: invalid, saturated; ``--mask`` adds
  ``negative`` or says ``none``).

What hsimap does with it: VNIR and SWIR merged in increasing wavelength. The two detectors
overlap between about 920 and 1010 nm; hsimap keeps the VNIR bands there and drops the SWIR
bands whose centre is at or below the last VNIR centre (the common practice, Vangi et al. 2021;
the SWIR detector's first bands are its noisiest). The scene is (band, y, x) float32
reflectance, -9999 where the product has no data.

What it does not: PRISMA L2D carries **no cloud mask** (ASI puts clouds in the L1 product, in
the sensor's geometry, which no L2D field maps onto the grid), so clouds are not masked; the L1,
L2B and L2C products (sensor geometry) are refused with a line that says so; the panchromatic
cube is not read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hsimap.errors import HsimapError
from hsimap.io.lazy import LazyCube

FILL = -9999.0
SWATH = "HDFEOS/SWATHS/PRS_L2D_HCO"
CUBES = {"vnir": f"{SWATH}/Data Fields/VNIR_Cube", "swir": f"{SWATH}/Data Fields/SWIR_Cube"}
ERRORS = {"vnir": f"{SWATH}/Data Fields/VNIR_PIXEL_L2_ERR_MATRIX",
          "swir": f"{SWATH}/Data Fields/SWIR_PIXEL_L2_ERR_MATRIX"}
FLAGS = {"invalid": 1, "negative": 2, "saturated": 4}
DEFAULT_MASK = ("invalid", "saturated")
MAX_SLOTS = 400            # 66 + 173 on every product
MAX_PIXELS = 4096 ** 2     # a scene is 1000 x 1000 (30 km at 30 m)
MASK_ROWS = 64             # rows of the error matrices read at once


def _h5(path: Path):
    import h5py

    return h5py.File(path, "r")


def is_prisma(path: Path) -> bool:
    """Whether hsimap reads ``path`` as a PRISMA product: any ``.he5`` file (HDF5-EOS), so that
    another level, another mission's file or a truncated download gets this reader's line."""
    return path.suffix.lower() == ".he5" and path.is_file()


def parse_mask(text: str | None) -> tuple[str, ...]:
    """``--mask`` as error-matrix flags ("invalid,negative", "none"; None: the default)."""
    if text is None:
        return DEFAULT_MASK
    names = tuple(t.strip().lower() for t in text.split(",") if t.strip())
    if names in ((), ("none",)):
        return ()
    bad = [n for n in names if n not in FLAGS]
    if bad:
        raise HsimapError(f"--mask: {bad[0]} is no PRISMA L2D quality flag; choose from "
                          f"{', '.join(FLAGS)} (or none; PRISMA L2D has no cloud mask)")
    return names


def _attr(f, name: str, path: Path):
    if name not in f.attrs:
        raise HsimapError(f"{path}: no {name} attribute; not a complete PRISMA L2D product")
    value = f.attrs[name]
    return value.decode() if isinstance(value, bytes) else value


def _floats(f, name: str, path: Path) -> np.ndarray:
    value = np.asarray(_attr(f, name, path))
    try:
        out = np.atleast_1d(value).astype(float)
    except (TypeError, ValueError):
        raise HsimapError(f"{path}: {name} is not a list of numbers") from None
    if out.size > MAX_SLOTS or not np.all(np.isfinite(out)):
        raise HsimapError(f"{path}: {name} holds {out.size} values, not all finite: a damaged "
                          "product")
    return out


def _number(f, name: str, path: Path) -> float:
    v = _floats(f, name, path)
    if v.size != 1:
        raise HsimapError(f"{path}: {name} is not one number")
    return float(v[0])


@dataclass(frozen=True)
class Detector:
    """One detector's cube: which of its slots hsimap keeps, in output order, and its scale."""

    name: str
    keep: np.ndarray        # slot indices, increasing wavelength
    offset: float
    gain: float


@dataclass
class Merged(LazyCube):
    """The two cubes as one (bands, rows, cols) float32 reflectance array: each read opens the
    file and reads its rows and columns of both cubes."""

    detectors: tuple[Detector, ...] = ()

    def read(self, bands: slice, rows: slice, cols: slice) -> np.ndarray:
        parts, empty = [], None
        with _h5(self.path) as f:
            for d in self.detectors:
                dn = f[CUBES[d.name]][rows, :, cols]          # (h, slots, w)
                zero = (dn == 0).all(axis=1)
                empty = zero if empty is None else empty & zero
                parts.append(d.offset + dn[:, d.keep, :].transpose(1, 0, 2).astype(np.float32)
                             * np.float32(d.gain))
        out = np.concatenate(parts)[bands]
        out[:, empty] = FILL
        return out


def _detector(f, name: str, path: Path, slots: int,
              above: float | None) -> tuple[Detector, np.ndarray, np.ndarray, np.ndarray]:
    """The detector's kept slots (increasing wavelength; above ``above`` nm when given), with
    their wavelengths, FWHM and bad-band flags."""
    cap = name.capitalize()
    wl = _floats(f, f"List_Cw_{cap}", path)
    fwhm = _floats(f, f"List_Fwhm_{cap}", path)
    if len(wl) != slots or len(fwhm) != slots:
        raise HsimapError(f"{path}: the {name.upper()} cube has {slots} bands but "
                          f"List_Cw_{cap} {len(wl)} and List_Fwhm_{cap} {len(fwhm)} values")
    flags = (_floats(f, f"List_Cw_{cap}_Flags", path) if f"List_Cw_{cap}_Flags" in f.attrs
             else np.ones(slots))
    if len(flags) != slots:
        raise HsimapError(f"{path}: List_Cw_{cap}_Flags has {len(flags)} values, the cube "
                          f"{slots} bands")
    present = wl > 0
    if above is not None:
        present &= wl > above
    keep = np.flatnonzero(present)
    keep = keep[np.argsort(wl[keep], kind="stable")]
    lo, hi = (_number(f, f"L2Scale{cap}Min", path), _number(f, f"L2Scale{cap}Max", path))
    if not hi > lo:
        raise HsimapError(f"{path}: L2Scale{cap}Max ({hi:g}) is not above L2Scale{cap}Min "
                          f"({lo:g})")
    return (Detector(name, keep, lo, (hi - lo) / 65535.0), wl[keep], fwhm[keep],
            flags[keep] == 0)


def _grid(f, path: Path, rows: int, cols: int):
    """The product's map grid: the corners are the corner pixels' centres."""
    from affine import Affine
    from rasterio.crs import CRS

    from hsimap.io.gdal import gdal_messages

    epsg = _number(f, "Epsg_Code", path)
    try:
        with gdal_messages():    # PROJ's own line for an unknown code stays off stderr
            crs = CRS.from_epsg(int(epsg))
    except Exception:  # noqa: BLE001 - rasterio raises its own CRSError for unknown codes
        raise HsimapError(f"{path}: Epsg_Code {epsg:g} is no EPSG code") from None
    ule, uln = (_number(f, "Product_ULcorner_easting", path),
                _number(f, "Product_ULcorner_northing", path))
    lre, lrn = (_number(f, "Product_LRcorner_easting", path),
                _number(f, "Product_LRcorner_northing", path))
    if rows < 2 or cols < 2:
        raise HsimapError(f"{path}: a {rows} x {cols} px cube has no grid to place")
    dx, dy = (lre - ule) / (cols - 1), (uln - lrn) / (rows - 1)
    if not (dx > 0 and dy > 0 and abs(dx - dy) <= 1e-3 * dx):
        raise HsimapError(f"{path}: its corners ({ule:g}, {uln:g}) and ({lre:g}, {lrn:g}) do "
                          f"not make square pixels over {cols} x {rows} px: a damaged product")
    return Affine(dx, 0.0, ule - dx / 2, 0.0, -dy, uln + dy / 2), crs.to_wkt()


def _quality_mask(f, path: Path, detectors: tuple[Detector, Detector], bad: np.ndarray,
                  mask: tuple[str, ...], rows: int, cols: int) -> np.ndarray | None:
    """Pixels where a band hsimap uses carries a chosen flag, read a few rows at a time."""
    if not mask:
        return None
    bits = np.uint8(sum(FLAGS[m] for m in mask))
    flagged = np.zeros((rows, cols), bool)
    start = 0
    for d in detectors:
        used = d.keep[~bad[start:start + len(d.keep)]]
        start += len(d.keep)
        if ERRORS[d.name] not in f:
            raise HsimapError(f"{path}: no {ERRORS[d.name].rsplit('/', 1)[1]}; give --mask "
                              "none to read the product without its quality flags")
        err = f[ERRORS[d.name]]
        if err.shape != f[CUBES[d.name]].shape:
            raise HsimapError(f"{path}: {ERRORS[d.name].rsplit('/', 1)[1]} is "
                              f"{err.shape}, the cube {f[CUBES[d.name]].shape}")
        for r in range(0, rows, MASK_ROWS):
            block = err[r:r + MASK_ROWS, :, :][:, used, :]
            flagged[r:r + MASK_ROWS] |= ((block & bits) != 0).any(axis=1)
    return flagged


def open_product(path: Path, *, chunks: int, mask: tuple[str, ...]):
    """The product as ``(cube, meta, attrs, transform, wkt, quality)``: a lazy (bands, rows,
    cols) reflectance array on the product's grid, the band metadata, the product's
    attributes, its georeferencing and the quality mask (None without one).
    :func:`hsimap.io.scene.open_scene` makes the scene of them."""
    try:
        with _h5(path) as f:
            swaths = list(f["HDFEOS/SWATHS"]) if "HDFEOS/SWATHS" in f else []
            if not any(s.startswith("PRS_") for s in swaths):
                raise HsimapError(f"{path}: an HDF5 file with no PRISMA swath "
                                  "(HDFEOS/SWATHS/PRS_*); not a PRISMA product")
            if "PRS_L2D_HCO" not in swaths:
                level = next((m.group(1) for s in swaths
                              if (m := re.match(r"PRS_(L\w+?)_", s))), "unknown")
                raise HsimapError(f"{path}: a PRISMA {level} product, in the sensor's geometry; "
                                  "hsimap reads PRISMA L2D (geocoded reflectance)")
            shapes = {}
            for name, where in CUBES.items():
                if where not in f:
                    raise HsimapError(f"{path}: no {where.rsplit('/', 1)[1]}; not a complete "
                                      "PRISMA L2D product")
                shapes[name] = f[where].shape
            if any(len(s) != 3 for s in shapes.values()):
                raise HsimapError(f"{path}: the cubes are not (rows, bands, cols)")
            (rows, nv, cols), (srows, ns, scols) = shapes["vnir"], shapes["swir"]
            if (rows, cols) != (srows, scols):
                raise HsimapError(f"{path}: VNIR_Cube is {cols} x {rows} px, SWIR_Cube "
                                  f"{scols} x {srows}: not one scene")
            if rows * cols > MAX_PIXELS or nv + ns > MAX_SLOTS:
                raise HsimapError(f"{path}: {cols} x {rows} px and {nv + ns} bands; not a "
                                  "PRISMA scene")
            vnir, vwl, vfwhm, vbad = _detector(f, "vnir", path, nv, None)
            if not len(vwl):
                raise HsimapError(f"{path}: List_Cw_Vnir names no band")
            swir, swl, sfwhm, sbad = _detector(f, "swir", path, ns, vwl.max())
            transform, wkt = _grid(f, path, rows, cols)
            bad = np.concatenate([vbad, sbad])
            quality = _quality_mask(f, path, (vnir, swir), bad, mask, rows, cols)
            start = f.attrs.get("Product_StartTime")
            swir_wl = _floats(f, "List_Cw_Swir", path)
            dropped = int(((swir_wl > 0) & (swir_wl <= vwl.max())).sum())
    except OSError as exc:
        raise HsimapError(f"{path}: cannot read it as HDF5 ({exc})") from None
    cube = Merged(path, (len(vwl) + len(swl), rows, cols), (vnir, swir))
    meta = {"wavelength": np.concatenate([vwl, swl]), "fwhm": np.concatenate([vfwhm, sfwhm]),
            "bad_band": bad, "nodata": FILL, "scale_factor": 1.0, "add_offset": 0.0}
    attrs = {"product": "PRISMA L2D", "metadata": f"{path.name} (root attributes)",
             "grid": "the product's geocoded grid (Epsg_Code; Product_UL/LRcorner_* as the "
                     "corner pixels' centres)",
             "bands_merged": f"{len(vwl)} VNIR + {len(swl)} SWIR bands in wavelength order; "
                             f"{dropped} SWIR bands at or below {vwl.max():.1f} nm (the "
                             "detectors' overlap) dropped, the VNIR kept"}
    if isinstance(start, bytes):
        start = start.decode()
    if start:
        attrs["acquisition_time"] = str(start)
    if quality is not None:
        attrs.update(quality_layers=",".join(mask), quality_masked_pixels=int(quality.sum()))
    return cube, meta, attrs, transform, wkt, quality
