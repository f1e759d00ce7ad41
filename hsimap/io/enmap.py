"""EnMAP L2A products as DLR delivers them: a folder (or ZIP) per tile holding
``...-SPECTRAL_IMAGE.TIF``, ``...-METADATA.XML`` and the quality layers ``...-QL_*.TIF``.

What the product keeps where (EnMAP HSI Product Specification L1B-L2A, EN-PCV-ICD-2009-2):

- SPECTRAL_IMAGE.TIF: int16, 224 bands, surface reflectance x 10,000 (nodata -32768), map
  grid and CRS; no wavelengths.
- METADATA.XML: per band ``specific/bandCharacterisation/bandID[@number]`` with
  ``wavelengthCenterOfBand`` and ``FWHMOfBand`` (nm) and ``GainOfBand`` / ``OffsetOfBand``
  (value = DN x gain + offset).
- QL_QUALITY_CLOUD / CLOUDSHADOW / HAZE / SNOW / CIRRUS.TIF: one band, 1 where the pixel is
  flagged. hsimap masks them (nodata in every output) unless told otherwise.
- The strong water-vapour bands are written as nodata in every pixel without a flag: they
  become bad bands (judged on a few small windows of the image).

The scene is the SPECTRAL_IMAGE.TIF opened as every GeoTIFF is, with the metadata's
wavelengths, FWHM, scale and acquisition time, and a ``quality_mask`` coordinate (y, x) that
:func:`hsimap.io.scene.read_window` folds into each window's valid pixels. METADATA.XML comes
from anywhere: it is parsed without entity expansion or external entities (defusedxml), and
its size is bounded.
"""

from __future__ import annotations

import re
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hsimap.errors import HsimapError

SPECTRAL = "SPECTRAL_IMAGE"
METADATA = "METADATA.XML"
QUALITY = ("CLOUD", "CLOUDSHADOW", "HAZE", "SNOW", "CIRRUS")   # QL_QUALITY_<name>.TIF
DEFAULT_MASK = QUALITY
L2A_SCALE = 1e-4           # reflectance x 10,000, the product's convention
L2A_NODATA = -32768.0
MAX_METADATA_BYTES = 64 * 2 ** 20   # a real METADATA.XML is well under 1 MB
MAX_BANDS = 1000


@dataclass
class EnmapProduct:
    """Where an EnMAP L2A product's files are (paths GDAL opens: plain or /vsizip/)."""

    spectral: str
    metadata: str | None
    quality: dict[str, str] = field(default_factory=dict)
    acquired: str | None = None


def _stem_of(name: str) -> str | None:
    m = re.match(r"(?i)(.*)-SPECTRAL_IMAGE\.TIF$", name)
    return m.group(1) if m else None


def find(path: Path) -> EnmapProduct | None:
    """The product at ``path`` (a tile's folder, its ZIP, or its SPECTRAL_IMAGE.TIF with the
    sidecars beside it), or None when ``path`` is not an EnMAP product."""
    if path.is_dir():
        names = {p.name: str(p) for p in path.iterdir()}
        base = None
    elif path.suffix.lower() == ".zip":
        try:
            with zipfile.ZipFile(path) as z:
                members = z.namelist()
        except (zipfile.BadZipFile, OSError) as exc:
            raise HsimapError(f"{path}: not a readable ZIP ({exc})") from None
        names = {Path(m).name: f"/vsizip/{path}/{m}" for m in members if not m.endswith("/")}
        base = None
    elif _stem_of(path.name):
        names = {p.name: str(p) for p in path.parent.iterdir()}
        base = _stem_of(path.name)
    else:
        return None
    stems = sorted(s for s in (_stem_of(n) for n in names) if s)
    if base is None:
        if not stems:
            return None
        if len(stems) > 1:
            raise HsimapError(f"{path}: holds {len(stems)} EnMAP tiles; give one tile's "
                              "folder or SPECTRAL_IMAGE.TIF")
        base = stems[0]
    upper = {n.upper(): v for n, v in names.items()}
    spectral = upper[f"{base}-SPECTRAL_IMAGE.TIF".upper()]
    quality = {q: upper[k] for q in QUALITY
               if (k := f"{base}-QL_QUALITY_{q}.TIF".upper()) in upper}
    t = re.search(r"_(\d{8}T\d{6})Z_", base)
    acquired = None
    if t:
        s = t.group(1)
        acquired = f"{s[:4]}-{s[4:6]}-{s[6:8]}T{s[9:11]}:{s[11:13]}:{s[13:15]}Z"
    return EnmapProduct(spectral, upper.get(f"{base}-{METADATA}".upper()), quality, acquired)


@dataclass
class Bands:
    wavelength: np.ndarray
    fwhm: np.ndarray
    gain: np.ndarray
    offset: np.ndarray


def read_metadata(where: str, bands: int) -> Bands:
    """Band centres, FWHM, gains and offsets from METADATA.XML, checked against the image's
    ``bands``; anything else is refused in one line naming the file."""
    from defusedxml import ElementTree
    from defusedxml.common import DefusedXmlException

    data = _read_bounded(where)
    try:
        root = ElementTree.fromstring(data, forbid_dtd=True)
    except DefusedXmlException as exc:
        raise HsimapError(f"{where}: refused ({type(exc).__name__}: a DTD or entity, which "
                          "EnMAP metadata never holds)") from None
    except ElementTree.ParseError as exc:
        raise HsimapError(f"{where}: not readable XML ({exc}); is it truncated?") from None
    items = root.findall("./specific/bandCharacterisation/bandID")
    if not items:
        raise HsimapError(f"{where}: no specific/bandCharacterisation/bandID entries: not an "
                          "EnMAP L2A METADATA.XML")
    if len(items) != bands:
        raise HsimapError(f"{where}: describes {len(items)} bands, the image has {bands}")
    rows = {}
    for it in items:
        try:
            n = int(it.get("number", ""))
            rows[n] = [float(it.findtext(tag, "nan")) for tag in
                       ("wavelengthCenterOfBand", "FWHMOfBand", "GainOfBand", "OffsetOfBand")]
        except ValueError:
            raise HsimapError(f"{where}: band {it.get('number')!r} has a value that is not "
                              "a number") from None
    if sorted(rows) != list(range(1, bands + 1)):
        raise HsimapError(f"{where}: band numbers are not 1 to {bands}")
    table = np.array([rows[i] for i in range(1, bands + 1)])
    if not np.isfinite(table[:, 0]).all() or not np.all(table[:, 0] > 0):
        raise HsimapError(f"{where}: a band without a positive wavelengthCenterOfBand")
    return Bands(table[:, 0], table[:, 1], table[:, 2], table[:, 3])


def _read_bounded(where: str) -> bytes:
    """The file's bytes, at most :data:`MAX_METADATA_BYTES` (a hostile header cannot make
    hsimap allocate more)."""
    inside = re.match(r"(?i)^/vsizip/(.+?\.zip)/(.+)$", where)
    if inside:
        with zipfile.ZipFile(inside.group(1)) as z:
            member = inside.group(2)
            if z.getinfo(member).file_size > MAX_METADATA_BYTES:
                raise HsimapError(f"{where}: over {MAX_METADATA_BYTES >> 20} MB; not EnMAP "
                                  "metadata")
            with z.open(member) as f:
                return f.read(MAX_METADATA_BYTES + 1)
    p = Path(where)
    if p.stat().st_size > MAX_METADATA_BYTES:
        raise HsimapError(f"{where}: over {MAX_METADATA_BYTES >> 20} MB; not EnMAP metadata")
    return p.read_bytes()


def _filled_bands(spectral: str, nodata: float, probe: int = 32) -> np.ndarray:
    """Bands the product fills with nodata (EnMAP blanks its strong water-vapour bands, 20 or
    so, without flagging them): judged on five small windows (centre and corners), among the
    pixels that have data in most bands. Without this every pixel would count as nodata."""
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(spectral) as src:
        h, w = src.height, src.width
        p = min(probe, h, w)
        starts = {(0, 0), (0, w - p), (h - p, 0), (h - p, w - p), ((h - p) // 2, (w - p) // 2)}
        filled = np.ones(src.count, bool)
        for r, c in starts:
            a = src.read(window=Window(c, r, p, p)).reshape(src.count, -1)
            blank = a == nodata
            pixels = blank.mean(axis=0) < 0.5        # pixels with data in most bands
            if pixels.any():
                filled &= blank[:, pixels].all(axis=1)
    return filled if not filled.all() else np.zeros(len(filled), bool)


def parse_mask(text: str | None) -> tuple[str, ...]:
    """``--mask`` as layer names: "cloud,cloudshadow" (any case), "none", or None (default)."""
    if text is None:
        return DEFAULT_MASK
    names = tuple(t.strip().upper() for t in text.split(",") if t.strip())
    if names in ((), ("NONE",)):
        return ()
    bad = [n for n in names if n not in QUALITY]
    if bad:
        raise HsimapError(f"--mask: {bad[0].lower()} is no quality layer; choose from "
                          f"{', '.join(q.lower() for q in QUALITY)} (or none)")
    return names


def open_product(product: EnmapProduct, *, chunks: int, mask: tuple[str, ...],
                 open_gdal) -> object:
    """The product's scene: the spectral image (``open_gdal``, the one GDAL opener) with the
    metadata's bands and the quality mask of the ``mask`` layers."""
    import dask.array as da
    import rasterio

    scene = open_gdal(product.spectral, chunks)
    n = scene.sizes["band"]
    if n > MAX_BANDS:
        raise HsimapError(f"{product.spectral}: {n} bands; not an EnMAP image")
    scene.attrs.update(product="EnMAP L2A", nodata=L2A_NODATA
                       if scene.attrs.get("nodata") is None else scene.attrs["nodata"])
    if product.metadata is None:
        warnings.warn(f"{Path(product.spectral).name}: no {METADATA} beside it: wavelengths "
                      "unknown (no wavelength check against a model, no band names)",
                      stacklevel=3)
        scene.attrs.update(scale_factor=L2A_SCALE, add_offset=0.0, metadata="none")
    else:
        b = read_metadata(product.metadata, n)
        gains, offsets = np.unique(b.gain), np.unique(b.offset)
        if len(gains) > 1 or len(offsets) > 1:
            raise HsimapError(f"{product.metadata}: per-band gains or offsets differ; hsimap "
                              "reads one scale for every band")
        gain = float(gains[0]) if np.isfinite(gains[0]) and gains[0] > 0 else L2A_SCALE
        offset = float(offsets[0]) if np.isfinite(offsets[0]) else 0.0
        scene = scene.assign_coords(wavelength=("band", b.wavelength), fwhm=("band", b.fwhm))
        scene.attrs.update(scale_factor=gain, add_offset=offset, metadata=product.metadata)
    if product.acquired and not scene.attrs.get("acquisition_time"):
        scene.attrs["acquisition_time"] = product.acquired
    scene = scene.assign_coords(bad_band=("band", _filled_bands(product.spectral,
                                                                scene.attrs["nodata"])))
    missing = [q for q in mask if q not in product.quality]
    if missing:
        raise HsimapError(f"{product.spectral}: no QL_QUALITY_{missing[0]}.TIF beside it; "
                          "give --mask without it, or --mask none")
    layers = []
    for q in mask:
        with rasterio.open(product.quality[q]) as src:
            if (src.height, src.width) != (scene.sizes["y"], scene.sizes["x"]):
                raise HsimapError(f"{product.quality[q]}: {src.width} x {src.height} px, the "
                                  f"image {scene.sizes['x']} x {scene.sizes['y']}")
            layers.append(src.read(1) == 1)
    if layers:
        flagged = np.logical_or.reduce(layers)
        scene = scene.assign_coords(quality_mask=(("y", "x"),
                                                  da.from_array(flagged, chunks=chunks)))
        scene.attrs["quality_layers"] = ",".join(q.lower() for q in mask)
        scene.attrs["quality_masked_pixels"] = int(flagged.sum())
    return scene
