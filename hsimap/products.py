"""What hsimap writes for a scene, and writing it: rasters, the endmember library, quicklooks.

:data:`PRODUCTS` is the one table of raster products (file suffix, data type, nodata, band
description). ``hsimap predict`` writes the first four (and the class probabilities when
asked), ``hsimap unmix`` the abundances and the error; both through :func:`write_products`,
which streams the rasters through :mod:`hsimap.engine` and adds the spectral library and the
quicklooks.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import dask.array as da
import numpy as np
import xarray as xr
from rasterio._err import CPLE_BaseError
from rasterio.errors import RasterioError

from hsimap.classes import ClassTable, class_dtype
from hsimap.engine import check_workers, store
from hsimap.errors import HsimapError, says_out_of_memory
from hsimap.io.files import check_name_length
from hsimap.io.gdal import bounded_write_cache, check_creation_options, gdal_messages
from hsimap.io.outputset import OutputSet
from hsimap.io.probabilities import UINT8_NODATA, UINT8_SCALE, UNIT
from hsimap.io.probabilities import tags as probability_tags
from hsimap.io.qml import classes_qml, ramp_qml
from hsimap.io.rasters import Grid, RasterSink
from hsimap.io.scene import is_virtual
from hsimap.io.speclib import write_library
from hsimap.io.stac import acquisition_time, require_pystac, write_item
from hsimap.progress import TileProgress


@dataclass(frozen=True)
class Product:
    """A raster product: file suffix after the scene's stem, data type, nodata, description."""

    suffix: str
    dtype: str | None          # None: the class table's (uint8 or uint16)
    nodata: float
    description: str | None    # single-band products; abundance bands carry endmember names
    unit: str | None = None    # GDAL band unit type, which QGIS and gdalinfo show
    scale: float | None = None  # stored integers x scale = value (GDAL scale factor)


PRODUCTS = {
    # "class": QGIS shows a band's description as the legend's subtitle
    "classes": Product("_classes.tif", None, 0, "class"),
    "abundances": Product("_abundances.tif", "float32", math.nan, None, "fraction"),
    "confidence": Product("_confidence.tif", "float32", math.nan, "max class probability",
                          "probability"),
    "error": Product("_error.tif", "float32", math.nan,
                     "spectral angle to reconstruction (radians)", "radians"),
    # Only when asked for (--probabilities): one band per class, named for it.
    "probabilities": Product("_probabilities.tif", "float32", math.nan, None, UNIT),
}
DEFAULT_RASTERS = ("classes", "abundances", "confidence", "error")
UNMIXING_RASTERS = ("abundances", "error")   # what a classifier without unmixing lacks
# Probabilities for large scenes: 0-254 in steps of 1/254 (rounding error at most 0.002),
# 255 nodata; a quarter of float32's size before compression.
PROBABILITIES_UINT8 = Product("_probabilities.tif", "uint8", UINT8_NODATA, None, UNIT,
                              scale=UINT8_SCALE)
LIBRARY = "_endmembers"        # .sli + .hdr (ENVI spectral library) and .csv
QUICKLOOKS = {"classes_png": "_classes.png", "abundances_png": "_abundances.png",
              "endmembers_png": "_endmembers.png"}
# Beside the class map: QGIS styles (loaded on open) and the per-class area table.
STYLES = {"classes_qml": ("classes", "_classes.qml"),
          "abundances_qml": ("abundances", "_abundances.qml"),
          "probabilities_qml": ("probabilities", "_probabilities.qml")}
AREAS = "_areas.csv"
STAC_ITEM = "_item.json"       # with --stac: a STAC Item of the set


def output_paths(out_dir: str | Path, stem: str, rasters: tuple[str, ...] = DEFAULT_RASTERS,
                 quicklooks: bool = True, stac: bool = False, library: bool = True
                 ) -> dict[str, Path]:
    """Every file written for a scene named ``stem``: the rasters asked for, the library
    (unless ``library`` is False: a classifier without unmixing), and the quicklooks that go
    with those."""
    d = Path(out_dir)
    paths = {k: d / f"{stem}{PRODUCTS[k].suffix}" for k in rasters}
    if library:
        for ext in ("sli", "hdr", "csv"):
            paths[f"library_{ext}"] = d / f"{stem}{LIBRARY}.{ext}"
    for k, (raster, suffix) in STYLES.items():
        if raster in rasters:
            paths[k] = d / f"{stem}{suffix}"
    if "classes" in rasters:
        paths["areas_csv"] = d / f"{stem}{AREAS}"
    if stac:
        paths["stac_item"] = d / f"{stem}{STAC_ITEM}"
    if quicklooks:
        for k, suffix in QUICKLOOKS.items():
            if (k == "endmembers_png" and library) or k.removesuffix("_png") in rasters:
                paths[k] = d / f"{stem}{suffix}"
    return paths


@dataclass
class EndmemberLibrary:
    """Endmember spectra in the scene's units, their names and wavelengths (nm, or None)."""

    spectra: np.ndarray
    names: list[str]
    wavelengths: np.ndarray | None
    description: str


@dataclass
class OutputOptions:
    """How products are written; the same options for every command that writes them."""

    workers: int | None = None
    cog: bool = False
    creation_options: dict[str, str] | None = None
    overwrite: bool = False
    quicklooks: bool = True
    progress: bool = True
    mmu: int = 0               # minimum mapping unit of the class map, pixels (0: none)
    stac: bool = False         # also a STAC Item of the set (needs pystac)
    provenance: dict[str, str] | None = None   # metadata items of every raster

    def check(self) -> None:
        """Refuse what cannot be written, before any computation."""
        check_workers(self.workers)
        if self.mmu < 0:
            raise HsimapError(f"--mmu must be non-negative, got {self.mmu}")
        if self.stac:
            require_pystac()
        check_creation_options(self.creation_options or {}, "COG" if self.cog else "GTiff")


def write_products(scene: xr.DataArray, out_dir: str | Path, stem: str,
                   rasters: dict[str, da.Array], library: EndmemberLibrary | None,
                   progress: TileProgress, opts: OutputOptions,
                   class_table: ClassTable | None = None,
                   family: tuple[str, ...] | None = None,
                   products: dict[str, Product] | None = None) -> dict[str, Path]:
    """Stream ``rasters`` (product key -> lazy (bands, y, x) or (y, x) array) to GeoTIFFs on
    the scene's grid, then write the library (when there is one) and quicklooks. Returns every
    path written.

    The files appear together or not at all (:class:`~hsimap.io.outputset.OutputSet`): until
    every one is complete, the previous set in ``out_dir`` stays as it was. ``family`` names
    the rasters a set may hold (default: every product, whichever command writes it); the
    previous set's files that this one does not write are removed with it. ``products``
    replaces entries of :data:`PRODUCTS` (another encoding of a product).
    """
    table = {**PRODUCTS, **(products or {})}
    paths = output_paths(out_dir, stem, tuple(rasters), opts.quicklooks, opts.stac,
                         library=library is not None)
    # A set is every product of its stem, whichever command wrote it: unmix over a predict
    # set replaces the class map too, rather than leaving it beside abundances of another run.
    kinds = family or tuple(PRODUCTS)
    for p in paths.values():
        check_name_length(p)
    outset = OutputSet(out_dir, stem,
                       {p.name for p in output_paths(out_dir, stem, kinds, stac=True).values()},
                       overwrite=opts.overwrite)
    staged = {k: outset.path(p.name) for k, p in paths.items()}
    workers = check_workers(opts.workers)
    grid = Grid.from_scene(scene)
    sinks = []
    with gdal_messages() as gdal:
        try:
            for key, array in rasters.items():
                product = table[key]
                count = array.shape[0] if array.ndim == 3 else 1
                descriptions = {"abundances": library.names if library else None,
                                "probabilities": class_table.names if class_table else None
                                }.get(key, [product.description])
                dtype = product.dtype or class_dtype(class_table)
                sinks.append(RasterSink(staged[key], grid, count, dtype, nodata=product.nodata,
                                        cog=opts.cog, overwrite=True,
                                        creation_options=opts.creation_options or {},
                                        descriptions=descriptions, units=[product.unit] * count,
                                        tags={**(opts.provenance or {}),
                                              **(probability_tags(dtype, class_table.ids)
                                                 if key == "probabilities" else {})},
                                        sieve=opts.mmu if key == "classes" else 0,
                                        class_table=class_table if key == "classes" else None,
                                        scale=product.scale))
            store(list(rasters.values()), sinks, workers=workers)
            progress.close()
            # The area table and quicklooks read whole rasters back: under the same bounded
            # GDAL cache as the streaming, or its 5%-of-RAM default keeps what they read.
            with bounded_write_cache():
                if library is not None:
                    write_library(outset.path(f"{stem}{LIBRARY}"), library.spectra,
                                  library.names, library.wavelengths, overwrite=True,
                                  description=library.description)
                _write_styles_and_areas(staged, class_table)
                if opts.stac:
                    assets = {k: p for k, p in staged.items() if k != "stac_item"}
                    for k in list(assets):   # the class names and attribute table
                        aux = Path(str(assets[k]) + ".aux.xml")
                        if aux.exists():
                            assets[f"{k}_aux"] = aux
                    write_item(staged["stac_item"], stem, grid, assets,
                               opts.provenance or {}, when=acquisition_time(scene),
                               cog=opts.cog, classes=class_table,
                               endmembers=library.names if library is not None else None)
                if opts.quicklooks:
                    from hsimap.quicklook import abundances_png, classes_png, endmembers_png

                    if "classes_png" in staged:
                        classes_png(staged["classes"], class_table, staged["classes_png"])
                    if "abundances_png" in staged:
                        abundances_png(staged["abundances"], staged["abundances_png"])
                    if "endmembers_png" in staged:
                        endmembers_png(library.spectra, library.wavelengths, library.names,
                                       staged["endmembers_png"])
            outset.commit()
        except BaseException as exc:
            for s in sinks:
                s.abort()
            outset.abort()
            progress.close(failed=True)
            if isinstance(exc, MemoryError) or (
                    isinstance(exc, (OSError, RasterioError, CPLE_BaseError))
                    and any(says_out_of_memory(m) for m in [*gdal, str(exc)])):
                raise HsimapError(f"{out_dir}: out of memory writing the outputs of {stem}; "
                                  "no output was changed (use fewer --workers or a smaller "
                                  "--window)") from None
            if isinstance(exc, (OSError, RasterioError, CPLE_BaseError)):
                # libtiff prints the root cause (``File too large``, ``No space left``)
                # itself; what reaches Python is its consequence.
                cause = gdal[0] if gdal else str(exc)
                raise HsimapError(f"{out_dir}: writing the outputs of {stem} failed "
                                  f"({cause.rstrip('.')}); no output was changed. Is the disk "
                                  "full, or the file size limited (ulimit -f)?") from None
            raise
    return paths


def _write_styles_and_areas(staged: dict[str, Path], class_table: ClassTable | None) -> None:
    """QGIS styles beside the rasters, and the class map's area per class (pixels, ha)."""
    from hsimap.io.areas import mapped_area

    if "classes_qml" in staged:
        staged["classes_qml"].write_text(classes_qml(class_table))
    if "abundances_qml" in staged:
        staged["abundances_qml"].write_text(ramp_qml())
    if "probabilities_qml" in staged:
        staged["probabilities_qml"].write_text(ramp_qml(label="probability"))
    if "areas_csv" in staged:
        area = mapped_area(staged["classes"], class_table.ids)
        with open(staged["areas_csv"], "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "name", "pixels", "hectares"])
            for k, (i, name) in enumerate(zip(class_table.ids, class_table.names,
                                              strict=True)):
                ha = "" if area.hectares is None else f"{area.hectares[k]:.4f}"
                w.writerow([i, name, int(area.pixels[k]), ha])


def provenance(scene: xr.DataArray, **items: object) -> dict[str, str]:
    """Metadata that says where a raster came from: hsimap version, the source scene, its
    modification time, and ``items`` (model hash, method...).

    No time of writing: outputs stay byte-for-byte reproducible, so a rerun can be checked
    against a checksum (batch manifests do).
    """
    from hsimap._version import __version__

    source = str(scene.attrs.get("source", ""))
    out = {"HSIMAP_VERSION": __version__, "HSIMAP_SOURCE_SCENE": source}
    if source and not is_virtual(source) and Path(source).exists():
        path = Path(source).resolve()
        out["HSIMAP_SOURCE_SCENE"] = str(path)
        mtime = datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.utc)
        out["HSIMAP_SOURCE_MODIFIED"] = mtime.isoformat(timespec="seconds")
    if scene.attrs.get("grid"):   # a product placed on a grid of its own (EMIT's GLT)
        out["HSIMAP_GRID"] = str(scene.attrs["grid"])
    for k, v in items.items():
        if v is not None:
            out[f"HSIMAP_{k.upper()}"] = str(v)
    return out


def set_files(out_dir: str | Path, stem: str) -> dict[str, Path]:
    """Every file an output set of ``stem`` may hold, whichever command wrote it."""
    return output_paths(out_dir, stem, tuple(PRODUCTS), quicklooks=True, stac=True)


def refuse_existing(out_dir: str | Path, stem: str, overwrite: bool) -> None:
    """Refuse a set whose files exist already (unless ``overwrite``), before any computation:
    any file of the set, so that no run writes beside another run's outputs."""
    if overwrite:
        return
    for p in set_files(out_dir, stem).values():
        if p.exists():
            raise HsimapError(f"{p}: exists; use --overwrite to replace it")
