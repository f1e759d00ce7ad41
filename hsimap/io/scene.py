"""Open a hyperspectral scene lazily as a dask-backed ``xarray.DataArray`` (band, y, x).

ENVI and GeoTIFF go through GDAL (rioxarray); classic ``.mat`` benchmark cubes through scipy or
h5py. Whatever the format, the result carries the same things: CRS and transform (rioxarray's
``.rio`` accessor), ``wavelength`` / ``fwhm`` / ``bad_band`` coordinates on the band dimension
(wavelengths in nanometres), and attrs ``nodata``, ``scale_factor``, ``add_offset``, ``interleave``,
``driver``, ``source``, ``georeferenced``.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import rasterio
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

from hsimap.errors import HsimapError, says_out_of_memory
from hsimap.io import emit, enmap, prisma
from hsimap.io.envi import DATA_SUFFIXES, parse_list, to_nm
from hsimap.io.gdal import gdal_messages
from hsimap.io.mat import mat_cube

DEFAULT_CHUNK = 512


def _floats(items: list[str] | None) -> np.ndarray | None:
    if not items:
        return None
    try:
        return np.array([float(t) for t in items], dtype=np.float64)
    except ValueError:
        return None


def resolve_envi_path(path: Path) -> Path:
    """The ENVI data file for a path that may name the header or the data file."""
    if path.suffix.lower() != ".hdr":
        return path
    stem = path.with_suffix("")
    for suffix in DATA_SUFFIXES:
        for candidate in (Path(str(stem) + suffix), Path(str(stem) + suffix.upper())):
            if candidate.is_file() and candidate != path:
                return candidate
    raise HsimapError(
        f"{path}: ENVI header without a data file (looked for {stem.name} with "
        f"{', '.join(s or 'no suffix' for s in DATA_SUFFIXES)}); put the data file beside it"
    )


def _number(src: rasterio.DatasetReader, what: str, value: str) -> float:
    """A metadata item that must be a number, refused in one line naming the file if not."""
    try:
        return float(value)
    except (TypeError, ValueError):
        raise HsimapError(f"{src.name}: {what} = {value!r} is not a number; fix the header or "
                          "metadata") from None


def _band_metadata(src: rasterio.DatasetReader) -> dict[str, Any]:
    """Wavelengths, FWHM, bad bands, ignore value and scale from GDAL metadata of any driver."""
    n = src.count
    envi = src.tags(ns="ENVI") if "ENVI" in (src.tag_namespaces() or []) else {}
    out: dict[str, Any] = {"wavelength": None, "fwhm": None, "bad_band": None,
                           "nodata": src.nodata, "scale_factor": 1.0, "add_offset": 0.0}
    units = envi.get("wavelength_units")
    wl = _floats(parse_list(envi.get("wavelength")))
    fwhm = _floats(parse_list(envi.get("fwhm")))
    if wl is None:
        # GeoTIFF writers (EnMAP, EnMAP-Box, ENVI's own GeoTIFF) put wavelengths on each band.
        per_band, fw, unit_seen = [], [], None
        for b in range(1, n + 1):
            tags = {k.lower(): v for k, v in src.tags(b).items()}
            spaces = src.tag_namespaces(b) or []
            imagery = src.tags(b, ns="IMAGERY") if "IMAGERY" in spaces else {}
            if "central_wavelength_um" in {k.lower() for k in imagery}:
                vals = {k.lower(): v for k, v in imagery.items()}
                per_band.append(_number(src, "central_wavelength_um",
                                        vals["central_wavelength_um"]) * 1000.0)
                fw.append(_number(src, "fwhm_um", vals["fwhm_um"]) * 1000.0
                          if "fwhm_um" in vals else math.nan)
                unit_seen = "nanometers"
            elif "wavelength" in tags:
                per_band.append(_number(src, f"band {b} wavelength", tags["wavelength"]))
                fw.append(_number(src, f"band {b} fwhm", tags["fwhm"]) if "fwhm" in tags
                          else math.nan)
                unit_seen = tags.get("wavelength_units", unit_seen)
            else:
                break
        if len(per_band) == n:
            wl, units = np.array(per_band), unit_seen
            fwhm = np.array(fw) if not np.all(np.isnan(fw)) else None
        else:
            default = {k.lower(): v for k, v in src.tags().items()}
            wl = _floats(parse_list(default.get("wavelength")))
            fwhm = fwhm if fwhm is not None else _floats(parse_list(default.get("fwhm")))
            units = default.get("wavelength_units", units)
    # A list that does not match the bands cannot say which band is which: refused, not
    # dropped (dropping it silently skipped the wavelength check against a model).
    for what, values in (("wavelength", wl), ("fwhm", fwhm)):
        if values is not None and len(values) != n:
            raise HsimapError(f"{src.name}: its {what} list has {len(values)} entries for "
                              f"{n} bands; fix the header so that there is one per band")
    out["wavelength"] = to_nm(wl, units)
    out["fwhm"] = to_nm(fwhm, units) if fwhm is not None and wl is not None else fwhm
    bbl = _floats(parse_list(envi.get("bbl")))
    if bbl is None:
        # EnMAP-Box and the EnMAP processor write bbl on each band of a GeoTIFF.
        per_band = [{k.lower(): v for k, v in src.tags(b).items()}.get("bbl")
                    for b in range(1, n + 1)]
        bbl = _floats([v for v in per_band if v is not None])
    if bbl is not None and len(bbl) == n:
        out["bad_band"] = bbl == 0  # ENVI: 1 good, 0 bad
    elif bbl is not None and envi.get("bbl") is not None:
        raise HsimapError(f"{src.name}: its bbl list has {len(bbl)} entries for {n} bands; fix "
                          "the header so that there is one per band")
    if out["nodata"] is None and envi.get("data_ignore_value") is not None:
        out["nodata"] = _number(src, "data ignore value", envi["data_ignore_value"])
    if envi.get("reflectance_scale_factor"):
        factor = _number(src, "reflectance scale factor", envi["reflectance_scale_factor"])
        if not factor > 0 or not np.isfinite(factor):
            raise HsimapError(f"{src.name}: its header's reflectance scale factor is {factor:g}; "
                              "reflectance is stored times a positive number (10000 for "
                              "reflectance x 10,000): fix the header")
        if factor != 1.0:
            out["scale_factor"] = 1.0 / factor
    elif src.scales and any(s != 1.0 for s in src.scales):
        out["scale_factor"] = float(src.scales[0])
        out["add_offset"] = float(src.offsets[0])
    return out


ACQUISITION_KEYS = ("acquisition_time", "start_time", "acquisition_start_time",
                    "datetime_start", "acquisitiondate")


def _acquisition_time(src: rasterio.DatasetReader) -> str | None:
    """The acquisition time a sensor's metadata names (ENVI header, GeoTIFF tags), as text."""
    spaces = ["ENVI"] if "ENVI" in (src.tag_namespaces() or []) else []
    for ns in [*spaces, None]:
        tags = {k.lower(): v for k, v in (src.tags(ns=ns) if ns else src.tags()).items()}
        for key in ACQUISITION_KEYS:
            if tags.get(key):
                return str(tags[key]).strip("{} ")
    return None


def _check_envi_size(path: Path, src: rasterio.DatasetReader) -> None:
    """Refuse an ENVI data file whose size is not what its header describes: a truncated file,
    or a wrong data type or offset, would otherwise be read as plausible-looking numbers."""
    offset = int(float(src.tags(ns="ENVI").get("header_offset", 0) or 0))
    itemsize = np.dtype(src.dtypes[0]).itemsize
    expected = offset + src.width * src.height * src.count * itemsize
    actual = path.stat().st_size
    if actual != expected:
        raise HsimapError(
            f"{path}: {actual:,} bytes, but its header describes {src.width} x {src.height} px "
            f"x {src.count} bands of {src.dtypes[0]} after a {offset}-byte offset = "
            f"{expected:,} bytes; the file is truncated or the header's data type or offset "
            "is wrong")


def is_virtual(path: str | Path) -> bool:
    """A GDAL virtual path (``/vsizip/``, ``/vsicurl/``, ``/vsis3/``...) or a URL GDAL reads
    (``s3://``, ``https://``...): not a file on this machine's file system."""
    text = str(path)
    return text.startswith("/vsi") or re.match(r"^[a-z][a-z0-9+.-]*://", text) is not None


# libtiff's words for a tag it could not read, and so skipped: GDAL then opens the file
# without it, and a GeoTIFF whose geokeys are damaged reads as "not georeferenced".
_DAMAGED_TAG = re.compile(r'(?:TIFFFetchNormalTag|TIFFReadDirectory|ReadDirEntry\w*):.*?'
                          r'(?:"(\w+)"|tag (\d+))')


def _refuse_damaged_tags(path: Path | str, messages: list[str]) -> None:
    """Refuse a TIFF whose tags GDAL had to skip: its georeferencing, band metadata or
    nodata would be lost without a word. Other GDAL messages become one warning line each."""
    tags: list[str] = []
    for m in messages:
        hit = _DAMAGED_TAG.search(m)
        if hit:
            tag = hit.group(1) or _TIFF_TAG_NAMES.get(int(hit.group(2)), f"tag {hit.group(2)}")
            if tag not in tags:
                tags.append(tag)
        else:
            warnings.warn(f"{path}: GDAL: {m.split(': ', 1)[-1]}", stacklevel=3)
    if tags:
        raise HsimapError(f"{path}: damaged TIFF tags ({', '.join(tags)}), which GDAL would "
                          "skip, losing what they hold (georeferencing, band metadata); the "
                          "file is damaged: export it again from its source")


_TIFF_TAG_NAMES = {33550: "GeoPixelScale", 33922: "GeoTiePoints", 34264: "GeoTransformation",
                   34735: "GeoKeyDirectory", 34736: "GeoDoubleParams",
                   34737: "GeoASCIIParams", 42112: "GDALMetadata", 42113: "GDALNoData"}


def _open_gdal(path: Path | str, chunks: int) -> xr.DataArray:
    virtual = isinstance(path, str)
    if not virtual and path.suffix.lower() == ".hdr":
        path = resolve_envi_path(path)
    try:
        # Within an Env, GDAL's messages reach rasterio's logger (and gdal_messages) rather
        # than stderr, where rioxarray's own open printed them as bare "Warning 1:" lines.
        with warnings.catch_warnings(), rasterio.Env(), gdal_messages() as messages:
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                meta = _band_metadata(src)
                driver = src.driver
                if driver == "ENVI" and not virtual:
                    _check_envi_size(path, src)
                interleave = (src.tags(ns="IMAGE_STRUCTURE").get("INTERLEAVE") or "").lower()
                gcps = src.gcps if src.gcps[0] else None
                georef = src.crs is not None or src.transform != Affine.identity() or \
                    gcps is not None
                crs, transform = src.crs, src.transform
                acquired = _acquisition_time(src)
            arr = rioxarray.open_rasterio(
                path, chunks={"band": -1, "y": chunks, "x": chunks}, lock=False, cache=False,
                mask_and_scale=False,
            )
    except RasterioIOError as exc:
        msg = str(exc).splitlines()[0]
        raise HsimapError(f"{path}: GDAL cannot read it as a raster ({msg})") from None
    _refuse_damaged_tags(path, messages)
    if driver == "ENVI":
        # The header is the ENVI truth: a .aux.xml left beside it (GDAL writes them, and so
        # did hsimap synth) would otherwise override wavelengths edited in the .hdr.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.Env(GDAL_PAM_ENABLED="NO"), rasterio.open(path) as src:
                meta = _band_metadata(src)
    arr.attrs = {}
    if crs is not None:
        arr = arr.rio.write_crs(crs)
    arr = arr.rio.write_transform(transform)
    arr = _finish(arr, meta, driver=driver, interleave=interleave, source=path, georef=georef)
    if acquired:
        arr.attrs["acquisition_time"] = acquired
    if gcps is not None and transform == Affine.identity():
        arr.attrs["gcps"] = gcps  # georeferenced by ground control points only
    return arr


def _open_lazy(path: Path, chunks: int, opened: tuple, *, driver: str,
               interleave: str) -> xr.DataArray:
    """A product whose reader gives a lazy cube on a map grid of its own (EMIT's GLT grid,
    PRISMA's geocoded grid): ``opened`` is the reader's ``open_product`` result."""
    cube, meta, attrs, transform, wkt, quality = opened
    b, h, w = cube.shape
    arr = xr.DataArray(
        da.from_array(cube, chunks=(b, chunks, chunks), meta=np.empty((0, 0, 0), np.float32)),
        dims=("band", "y", "x"),
        coords={"band": np.arange(1, b + 1),
                "y": transform.f + transform.e * (np.arange(h) + 0.5),
                "x": transform.c + transform.a * (np.arange(w) + 0.5)},
    )
    arr = arr.rio.write_crs(wkt).rio.write_transform(transform)
    arr = _finish(arr, meta, driver=driver, interleave=interleave, source=path, georef=True)
    arr.attrs.update(attrs)
    if quality is not None:
        arr = arr.assign_coords(quality_mask=(("y", "x"), da.from_array(quality, chunks=chunks)))
    return arr


def _open_mat(path: Path, variable: str | None, chunks: int) -> xr.DataArray:
    cube = mat_cube(path, variable)
    b, h, w = cube.shape
    arr = xr.DataArray(
        # meta given: dask would otherwise slice the cube to learn its type, reading it
        da.from_array(cube, chunks=(b, chunks, chunks), meta=np.empty((0, 0, 0), cube.dtype)),
        dims=("band", "y", "x"),
        coords={"band": np.arange(1, b + 1), "y": np.arange(h) + 0.5, "x": np.arange(w) + 0.5},
    )
    arr = arr.rio.write_transform(Affine.identity())
    meta = {"wavelength": None, "fwhm": None, "bad_band": None, "nodata": None,
            "scale_factor": 1.0, "add_offset": 0.0}
    return _finish(arr, meta, driver="MAT", interleave="bip", source=path, georef=False)


def _finish(arr: xr.DataArray, meta: dict[str, Any], *, driver: str, interleave: str,
            source: Path, georef: bool) -> xr.DataArray:
    n = arr.sizes["band"]
    wl = meta["wavelength"] if meta["wavelength"] is not None else np.full(n, np.nan)
    fwhm = meta["fwhm"] if meta["fwhm"] is not None else np.full(n, np.nan)
    bad = meta["bad_band"] if meta["bad_band"] is not None else np.zeros(n, dtype=bool)
    arr = arr.assign_coords(wavelength=("band", wl), fwhm=("band", fwhm), bad_band=("band", bad))
    arr.attrs.update(
        nodata=meta["nodata"], scale_factor=meta["scale_factor"], add_offset=meta["add_offset"],
        interleave=interleave, driver=driver, source=str(source), georeferenced=georef,
    )
    arr.name = Path(source).stem
    return arr


def open_scene(path: str | Path, *, variable: str | None = None,
               chunks: int = DEFAULT_CHUNK, mask: str | None = None) -> xr.DataArray:
    """Open a scene lazily: nothing but metadata is read until values are asked for.

    Args:
        path: an ENVI header or data file, a GeoTIFF (or any GDAL raster), a ``.mat`` file, or
            a sensor product as downloaded (an EnMAP L2A tile's folder, ZIP or
            SPECTRAL_IMAGE.TIF: :mod:`hsimap.io.enmap`; an EMIT L2A reflectance .nc, with
            its mask product beside it: :mod:`hsimap.io.emit`; a PRISMA L2D .he5:
            :mod:`hsimap.io.prisma`).
        variable: for ``.mat`` files, the cube's variable name (detected when omitted).
        chunks: spatial chunk size of the dask array, in pixels.
        mask: a product's quality layers whose flagged pixels are nodata ("cloud,haze",
            "none"; default: EnMAP's cloud, shadow, haze, snow and cirrus layers; EMIT's
            cloud, cirrus, dilated cloud and spacecraft flags; PRISMA's invalid and
            saturated error-matrix flags).

    Returns:
        DataArray (band, y, x) with CRS/transform on ``.rio`` and metadata as described above.
    """
    if is_virtual(path):
        # Kept a string: Path would fold "s3://bucket" into "s3:/bucket".
        return _open_gdal(str(path), chunks)
    path = Path(path)
    if not path.exists():
        raise HsimapError(f"{path}: no such file")
    if emit.is_emit(path):
        return _open_lazy(path, chunks, emit.open_product(path, chunks=chunks,
                                                          mask=emit.parse_mask(mask)),
                          driver="EMIT", interleave="bip")
    if prisma.is_prisma(path):
        return _open_lazy(path, chunks, prisma.open_product(path, chunks=chunks,
                                                            mask=prisma.parse_mask(mask)),
                          driver="PRISMA", interleave="bil")
    product = enmap.find(path)
    if product is not None:
        return enmap.open_product(product, chunks=chunks, mask=enmap.parse_mask(mask),
                                  open_gdal=_open_gdal)
    if path.is_dir():
        raise HsimapError(f"{path}: is a directory, not a scene file")
    if path.suffix.lower() == ".mat":
        return _open_mat(path, variable, chunks)
    return _open_gdal(path, chunks)


def usable_bands(scene: xr.DataArray) -> np.ndarray:
    """Indices of the bands a model or an unmixing uses: all but the bad bands."""
    return np.flatnonzero(~scene.coords["bad_band"].values)


def valid_mask(raw: np.ndarray, nodata: float | None) -> np.ndarray:
    """Pixels with data in every band: nodata (or NaN) in any band masks the pixel."""
    bad = np.zeros(raw.shape[1:], dtype=bool)
    if raw.dtype.kind == "f":
        bad |= ~np.isfinite(raw).all(axis=0)
    if nodata is not None and not (isinstance(nodata, float) and math.isnan(nodata)):
        bad |= (raw == nodata).any(axis=0)
    return ~bad


def read_block(scene: xr.DataArray, key: tuple) -> np.ndarray:
    """``scene.data[key]`` as numpy, a damaged file refused in one line naming it."""
    try:
        # On a worker thread, GDAL's messages reach rasterio's logger only inside an Env.
        with rasterio.Env():
            return np.asarray(scene.data[key].compute(scheduler="synchronous"))
    except MemoryError:
        raise HsimapError(f"{scene.attrs.get('source', 'scene')}: out of memory reading a "
                          "window; use fewer --workers or a smaller --window") from None
    except RasterioIOError as exc:
        cause = str(exc.__cause__ or exc).splitlines()[0]
        rows, cols = key[-2], key[-1]
        if says_out_of_memory(cause):
            raise HsimapError(f"{scene.attrs.get('source', 'scene')}: out of memory reading "
                              f"rows {rows.start or 0}-{rows.stop} ({cause}); the file is "
                              "intact: use fewer --workers or a smaller --window") from None
        raise HsimapError(f"{scene.attrs.get('source', 'scene')}: cannot read rows "
                          f"{rows.start or 0}-{rows.stop} x columns {cols.start or 0}-"
                          f"{cols.stop} ({cause}); the file is truncated or damaged") from None


def physical(scene: xr.DataArray, raw: np.ndarray | float) -> np.ndarray:
    """Stored values of ``scene`` in physical units (its scale factor and offset, float32):
    the one place a raster's encoding is undone, for windows, scans and single values."""
    scale = np.float32(scene.attrs.get("scale_factor", 1.0))
    offset = np.float32(scene.attrs.get("add_offset", 0.0))
    v = np.asarray(raw).astype(np.float32)
    return v * scale + offset if scale != 1.0 or offset != 0.0 else v


def read_window(scene: xr.DataArray, rows: slice, cols: slice,
                bands: np.ndarray | None = None, valid_bands: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """Read one window in physical units.

    A pixel is valid when it has data in every band of ``valid_bands`` (default ``bands``, or
    else every band not flagged bad): bad bands such as water-vapour absorption, which sensors
    fill with nodata everywhere, do not make every pixel invalid.

    Returns:
        ``(values, valid)``: float32 array (bands, h, w) with the scale factor applied and
        invalid pixels set to 0, and the boolean valid mask (h, w).
    """
    raw = read_block(scene, (slice(None), rows, cols))
    if valid_bands is None:
        valid_bands = bands if bands is not None else usable_bands(scene)
    judged = raw[valid_bands] if len(valid_bands) else raw
    valid = valid_mask(judged, scene.attrs.get("nodata"))
    if "quality_mask" in scene.coords:   # a product's cloud, shadow... layers
        valid &= ~np.asarray(scene.coords["quality_mask"].data[rows, cols])
    if bands is not None:
        raw = raw[bands]
    values = physical(scene, raw)
    values[:, ~valid] = 0.0
    return values, valid


@dataclass
class SceneInfo:
    """What ``hsimap info`` reports: everything needed to trust a scene before using it."""

    path: str
    driver: str
    width: int
    height: int
    bands: int
    dtype: str
    interleave: str
    crs: str | None
    transform: list[float]
    pixel_size: list[float]
    georeferenced: bool
    wavelengths: list[float] | None
    fwhm: list[float] | None
    wavelength_range: list[float] | None
    nodata: float | None
    bad_bands: list[int]
    scale_factor: float
    add_offset: float
    chunks: list[int]
    product: str | None = None            # a sensor product hsimap read as such
    metadata: str | None = None           # where its band metadata came from ("none": absent)
    acquisition_time: str | None = None
    quality_layers: list[str] | None = None
    quality_masked_pixels: int | None = None
    grid: str | None = None               # a product's own map grid, when it brings one
    bands_merged: str | None = None       # how a product's detectors became one cube

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def crs_string(crs: Any) -> str | None:
    """``EPSG:n`` when the CRS has an EPSG code, WKT otherwise, None without a CRS."""
    if crs is None:
        return None
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_wkt()


def scene_info(scene: xr.DataArray) -> SceneInfo:
    """Summarise an opened scene (reads no pixel values)."""
    t = scene.rio.transform()
    wl = scene.coords["wavelength"].values
    fwhm = scene.coords["fwhm"].values
    has_wl = bool(np.all(np.isfinite(wl)))
    nodata = scene.attrs.get("nodata")
    chunks = [int(c[0]) for c in scene.data.chunks]
    return SceneInfo(
        path=scene.attrs["source"], driver=scene.attrs["driver"],
        width=scene.sizes["x"], height=scene.sizes["y"], bands=scene.sizes["band"],
        dtype=str(scene.dtype), interleave=scene.attrs.get("interleave") or "unknown",
        crs=crs_string(scene.rio.crs), transform=[t.a, t.b, t.c, t.d, t.e, t.f],
        pixel_size=[abs(t.a), abs(t.e)], georeferenced=bool(scene.attrs.get("georeferenced")),
        wavelengths=[float(v) for v in wl] if has_wl else None,
        fwhm=[float(v) for v in fwhm] if np.all(np.isfinite(fwhm)) else None,
        wavelength_range=[float(wl.min()), float(wl.max())] if has_wl else None,
        nodata=None if nodata is None else float(nodata),
        bad_bands=[int(i) + 1 for i in np.flatnonzero(scene.coords["bad_band"].values)],
        scale_factor=float(scene.attrs.get("scale_factor", 1.0)),
        add_offset=float(scene.attrs.get("add_offset", 0.0)),
        chunks=chunks,
        product=scene.attrs.get("product"), metadata=scene.attrs.get("metadata"),
        acquisition_time=scene.attrs.get("acquisition_time"),
        quality_layers=scene.attrs["quality_layers"].split(",")
        if scene.attrs.get("quality_layers") else None,
        quality_masked_pixels=scene.attrs.get("quality_masked_pixels"),
        grid=scene.attrs.get("grid"), bands_merged=scene.attrs.get("bands_merged"),
    )

