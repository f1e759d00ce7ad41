"""Synthetic georeferenced scenes with known truth, mixed from real (USGS) spectra.

Classes are Voronoi regions, each with its own material mixture; abundances blend smoothly
across region boundaries and vary smoothly inside regions; every pixel gets its own endmember
variability (a brightness factor and a smooth spectral perturbation) and noise at a given SNR.
Every field but the noise is a function of the pixel's scene coordinates, so a scene of any size
is made block by block in bounded memory. The noise is drawn per block, from the seed and the
block's origin: a scene is reproducible for a given ``block`` size, and two block sizes give the
same scene up to its noise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window
from scipy.spatial import cKDTree

from hsimap.classes import ClassTable
from hsimap.data.usgs import library_spectra
from hsimap.errors import HsimapError
from hsimap.io.envi import WRITE_SUFFIXES
from hsimap.io.files import atomic_output, check_output, with_extension
from hsimap.io.gdal import bounded_write_cache
from hsimap.io.rasters import Grid, RasterSink
from hsimap.io.speclib import envi_safe_text, write_library

INT_SCALE = 10000.0


@dataclass
class SynthSpec:
    """What to make. Sizes in pixels; ``pixel_size`` in CRS units (metres for UTM)."""

    width: int = 256
    height: int = 256
    bands: int = 64
    endmembers: int = 5
    classes: int = 4
    snr: float = 40.0
    variability: float = 0.05
    region_size: float = 64.0
    boundary: float = 3.0
    pixel_size: float = 2.0
    crs: str = "EPSG:32611"
    origin: tuple[float, float] = (500000.0, 4100000.0)
    dtype: str = "float32"
    nodata_edges: bool = False
    seed: int = 0
    block: int = 256
    wavelength_range: tuple[float, float] = (400.0, 2450.0)
    class_names: list[str] = field(default_factory=list)

    def check(self) -> None:
        """Refuse sizes that make no scene, in one line."""
        if min(self.width, self.height, self.bands) < 1:
            raise HsimapError(f"width, height and bands must be at least 1, got {self.width}, "
                              f"{self.height} and {self.bands}")
        if self.classes < 1 or self.endmembers < 2:
            raise HsimapError("need at least 1 class and 2 endmembers")
        if self.block < 1:
            raise HsimapError(f"block must be at least 1, got {self.block}")


@dataclass
class SynthScene:
    """Paths written by :func:`make_scene` and the truth held in memory that is small."""

    scene: Path
    labels: Path
    abundances: Path
    library: Path
    endmembers: np.ndarray
    endmember_names: list[str]
    wavelengths: np.ndarray
    class_table: ClassTable
    mixtures: np.ndarray


class _Fields:
    """Smooth random fields in scene coordinates: sums of a few plane waves."""

    def __init__(self, rng: np.random.Generator, n: int, scale: float, waves: int = 4):
        self.freq = rng.uniform(-1, 1, size=(n, waves, 2)) / scale
        self.phase = rng.uniform(0, 2 * np.pi, size=(n, waves))

    def __call__(self, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        arg = (self.freq[..., 0, None] * yy + self.freq[..., 1, None] * xx) * 2 * np.pi
        return np.sin(arg + self.phase[..., None]).sum(axis=1) / np.sqrt(self.freq.shape[1])


class _Model:
    """All random choices of one scene, drawn once from the seed."""

    def __init__(self, spec: SynthSpec):
        rng = np.random.default_rng(spec.seed)
        lib, names, lib_wl = library_spectra()
        if spec.endmembers > len(names):
            raise HsimapError(f"at most {len(names)} endmembers are embedded")
        self.wavelengths = np.linspace(*spec.wavelength_range, spec.bands)
        resampled = np.array([np.interp(self.wavelengths, lib_wl, s) for s in lib])
        # Farthest-angle picks keep the endmembers spectrally distinct.
        unit = resampled / np.linalg.norm(resampled, axis=1, keepdims=True)
        picks = [int(rng.integers(len(names)))]
        while len(picks) < spec.endmembers:
            cos = np.max(unit @ unit[picks].T, axis=1)
            cos[picks] = np.inf
            picks.append(int(np.argmin(cos)))
        self.E = resampled[picks]
        self.names = [names[i] for i in picks]
        p = spec.endmembers
        mix = rng.dirichlet(np.full(p, 0.5), size=spec.classes)
        for c in range(spec.classes):  # one dominant material per class, distinct mixtures
            mix[c] = 0.45 * mix[c]
            mix[c, c % p] += 0.55
        self.mixtures = mix
        n_regions = max(2 * spec.classes,
                        int(round(spec.width * spec.height / spec.region_size**2)))
        self.seeds = rng.uniform([0, 0], [spec.height, spec.width], size=(n_regions, 2))
        region_class = np.arange(n_regions) % spec.classes
        rng.shuffle(region_class)
        self.region_class = region_class
        self.tree = cKDTree(self.seeds)
        self.abund_field = _Fields(rng, p, spec.region_size / 2)
        self.bright_field = _Fields(rng, 1, spec.region_size)
        self.shape_field = _Fields(rng, 2 * p, spec.region_size)
        lam = (self.wavelengths - self.wavelengths[0]) / np.ptp(self.wavelengths)
        self.shape_basis = np.stack([np.cos(np.pi * lam), np.cos(2 * np.pi * lam)])  # (2, B)
        self.noise_seed = int(rng.integers(2**31))

    def block(self, spec: SynthSpec, r0: int, r1: int, c0: int, c1: int):
        yy, xx = np.mgrid[r0:r1, c0:c1].astype(np.float64) + 0.5
        yy, xx = yy.ravel(), xx.ravel()
        d, idx = self.tree.query(np.column_stack([yy, xx]), k=2)
        cls1, cls2 = self.region_class[idx[:, 0]], self.region_class[idx[:, 1]]
        t = 0.5 * (1 + np.tanh((d[:, 1] - d[:, 0]) / spec.boundary))
        a = t[:, None] * self.mixtures[cls1] + (1 - t[:, None]) * self.mixtures[cls2]
        a = a * np.exp(0.35 * self.abund_field(yy, xx).T)
        a /= a.sum(axis=1, keepdims=True)
        p = self.E.shape[0]
        bright = 1 + spec.variability * self.bright_field(yy, xx)[0]
        shape = self.shape_field(yy, xx).reshape(p, 2, -1)  # (P, 2, n)
        x = a @ self.E
        for k in range(2):
            x += spec.variability * (a * shape[:, k].T) @ (self.E * self.shape_basis[k])
        x *= bright[:, None]
        rng = np.random.default_rng([self.noise_seed, r0, c0])
        sigma = x.mean(axis=1, keepdims=True) / 10 ** (spec.snr / 20)
        x += rng.standard_normal(x.shape) * sigma
        h, w = r1 - r0, c1 - c0
        labels = (cls1 + 1).astype(np.uint8)
        valid = np.ones(h * w, dtype=bool)
        if spec.nodata_edges:
            # A flight line's footprint: a rotated strip, nodata outside.
            ang = np.deg2rad(12)
            u = (xx - spec.width / 2) * np.cos(ang) + (yy - spec.height / 2) * np.sin(ang)
            valid = np.abs(u) < 0.42 * spec.width
        return (x.T.reshape(-1, h, w), a.T.reshape(p, h, w), labels.reshape(h, w),
                valid.reshape(h, w))


def _scene_profile(spec: SynthSpec, path: Path, model: _Model) -> dict:
    transform = Affine(spec.pixel_size, 0, spec.origin[0], 0, -spec.pixel_size, spec.origin[1])
    is_int = spec.dtype == "int16"
    profile = dict(width=spec.width, height=spec.height, count=spec.bands, dtype=spec.dtype,
                   crs=CRS.from_user_input(spec.crs), transform=transform,
                   nodata=-9999 if spec.nodata_edges or is_int else None)
    suffix = path.suffix.lower()
    if suffix in WRITE_SUFFIXES:
        interleave = {".bil": "bil", ".bip": "bip"}.get(suffix, "bsq")
        profile.update(driver="ENVI", interleave=interleave)
    elif suffix in (".tif", ".tiff"):
        profile.update(driver="GTiff", tiled=True, blockxsize=256, blockysize=256,
                       interleave="pixel", compress="deflate", BIGTIFF="IF_SAFER")
        if spec.width < 256 or spec.height < 256:
            profile.update(tiled=False)
            profile.pop("blockxsize"), profile.pop("blockysize")
    else:
        raise HsimapError(f"{path}: scene must end in .tif or an ENVI suffix "
                          f"({', '.join(sorted(WRITE_SUFFIXES))})")
    return profile


def _write_band_metadata(dst, spec: SynthSpec, model: _Model) -> None:
    wl = model.wavelengths
    fwhm = np.gradient(wl)
    if dst.driver == "ENVI":
        items = {"wavelength": "{" + ", ".join(f"{v:.4f}" for v in wl) + "}",
                 "fwhm": "{" + ", ".join(f"{v:.4f}" for v in fwhm) + "}",
                 "wavelength_units": "Nanometers"}
        if spec.dtype == "int16":
            items["reflectance_scale_factor"] = f"{INT_SCALE:g}"
        dst.update_tags(ns="ENVI", **items)
    else:
        # Per-band items, as EnMAP and EnMAP-Box write them.
        for b in range(spec.bands):
            dst.update_tags(b + 1, wavelength=f"{wl[b]:.4f}", fwhm=f"{fwhm[b]:.4f}",
                            wavelength_units="Nanometers")
            dst.set_band_description(b + 1, f"band {b + 1} ({wl[b]:.1f} nm)")
        if spec.dtype == "int16":
            dst.scales = [1 / INT_SCALE] * spec.bands
            dst.offsets = [0.0] * spec.bands


def make_scene(path: str | Path, spec: SynthSpec | None = None, *,
               overwrite: bool = False) -> SynthScene:
    """Write a synthetic scene and its truth beside it.

    Writes ``path`` (GeoTIFF, or ENVI by suffix: .img/.bsq=BSQ, .bil, .bip), and
    ``<stem>_labels.tif`` (class map), ``<stem>_abundances.tif`` (true abundances) and
    ``<stem>_endmembers.sli/.hdr/.csv`` (true endmember spectra).
    """
    spec = spec or SynthSpec()
    spec.check()
    path = Path(path)
    model = _Model(spec)
    stem = path.with_suffix("")
    labels_path = Path(f"{stem}_labels.tif")
    abund_path = Path(f"{stem}_abundances.tif")
    lib_base = Path(f"{stem}_endmembers")
    for p in (path, labels_path, abund_path, with_extension(lib_base, ".sli")):
        check_output(p, overwrite)
    names = spec.class_names or [f"mixture {c + 1}" for c in range(spec.classes)]
    table = ClassTable(list(range(1, spec.classes + 1)), names[: spec.classes])
    profile = _scene_profile(spec, path, model)
    grid = Grid(spec.width, spec.height, profile["crs"], profile["transform"])
    with atomic_output(path, overwrite) as tmp:
        with bounded_write_cache(), \
                rasterio.open(tmp, "w", **profile) as dst, \
                RasterSink(labels_path, grid, 1, "uint8", nodata=0, class_table=table,
                           overwrite=overwrite) as lab, \
                RasterSink(abund_path, grid, spec.endmembers, "float32", nodata=float("nan"),
                           descriptions=model.names, overwrite=overwrite) as ab:
            _write_band_metadata(dst, spec, model)
            for r0 in range(0, spec.height, spec.block):
                r1 = min(r0 + spec.block, spec.height)
                for c0 in range(0, spec.width, spec.block):
                    c1 = min(c0 + spec.block, spec.width)
                    x, a, y, valid = model.block(spec, r0, r1, c0, c1)
                    if spec.dtype == "int16":
                        x = np.clip(np.round(x * INT_SCALE), -32767, 32767)
                    x[:, ~valid] = profile["nodata"] if profile["nodata"] is not None else 0
                    a[:, ~valid] = np.nan
                    y[~valid] = 0
                    win = Window(c0, r0, c1 - c0, r1 - r0)
                    dst.write(x.astype(spec.dtype), window=win)
                    lab.write(y, r0, c0)
                    ab.write(a.astype(np.float32), r0, c0)
        if path.suffix.lower() in WRITE_SUFFIXES:
            _describe_envi(tmp.with_suffix(".hdr"), path)
    write_library(lib_base, model.E, model.names, model.wavelengths, overwrite=overwrite,
                  description="hsimap synth: true endmembers")
    return SynthScene(path, labels_path, abund_path, with_extension(lib_base, ".sli"), model.E,
                      model.names, model.wavelengths, table, model.mixtures)


def _describe_envi(header: Path, final: Path) -> None:
    """GDAL's ENVI driver describes the file by the name it was written under (the temporary
    one): the description names the scene instead."""
    text = header.read_text()
    start = text.find("description = {")
    if start >= 0:
        end = text.index("}", start)
        name = envi_safe_text(final.name)
        header.write_text(text[:start] + f"description = {{hsimap synth scene {name}"
                          + text[end:])
