"""Streaming a prediction to GIS-ready files: rasters window by window, library, quicklooks."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import dask.array as da
import numpy as np
import rasterio
import torch
import xarray as xr
from rasterio.enums import Resampling
from tqdm import tqdm

from hsimap.errors import HsimapError
from hsimap.inference import check_compatible, default_workers, predict
from hsimap.io.speclib import write_library
from hsimap.io.writers import Grid, RasterSink, check_output, class_dtype, temp_name
from hsimap.model.store import TrainedModel
from hsimap.windows import Tile

RASTERS = {"classes": "_classes.tif", "abundances": "_abundances.tif",
           "confidence": "_confidence.tif", "error": "_error.tif"}
LIBRARY = "_endmembers"
QUICKLOOKS = {"classes_png": "_classes.png", "abundances_png": "_abundances.png",
              "endmembers_png": "_endmembers.png"}


def output_paths(out_dir: str | Path, stem: str) -> dict[str, Path]:
    """Every file ``hsimap predict`` writes for a scene named ``stem``."""
    d = Path(out_dir)
    paths = {k: d / f"{stem}{s}" for k, s in RASTERS.items()}
    for ext in ("sli", "hdr", "csv"):
        paths[f"library_{ext}"] = d / f"{stem}{LIBRARY}.{ext}"
    paths.update({k: d / f"{stem}{s}" for k, s in QUICKLOOKS.items()})
    return paths


class _Target:
    """``dask.array.store`` target: ``target[band, rows, cols] = block`` writes a window."""

    def __init__(self, sink: RasterSink, planar: bool):
        self.sink, self.planar = sink, planar

    def __setitem__(self, key: tuple[slice, ...], value: np.ndarray) -> None:
        rows, cols = key[-2], key[-1]
        self.sink.write(value if self.planar else value[None], rows.start or 0, cols.start or 0)


def model_endmembers(model: TrainedModel) -> tuple[np.ndarray, np.ndarray | None]:
    """Mean endmember spectra in the scene's physical units, and their wavelengths."""
    lo, hi = model.scale
    e = model.network.unmixing.mean_endmembers().detach().cpu().numpy()
    spectra = e * (hi - lo) + lo
    wl = model.card.get("scene_wavelengths")
    wl = np.asarray(wl)[model.band_indices] if wl else None
    return spectra, wl


@dataclass
class PredictReport:
    paths: dict[str, Path]
    pixels: int
    seconds: float
    windows: int


def write_outputs(scene: xr.DataArray, model: TrainedModel, out_dir: str | Path, *,
                  window: int | None = None, halo: int | None = None,
                  workers: int | None = None, cog: bool = False, overwrite: bool = False,
                  creation_options: dict[str, str] | None = None, progress: bool = True,
                  quicklooks: bool = True, ignore_wavelengths: bool = False,
                  stem: str | None = None) -> PredictReport:
    """Predict ``scene`` and write every output, streaming window by window.

    Memory is bounded by window size and worker count: each tile's results go straight to the
    (temporary) output files. Outputs appear under their final names only once complete.
    """
    import time

    check_compatible(scene, model, ignore_wavelengths=ignore_wavelengths)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise HsimapError(f"{out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    if not os.access(out, os.W_OK):
        raise HsimapError(f"{out}: output folder is not writable")
    stem = stem or Path(scene.attrs.get("source", "scene")).stem
    paths = output_paths(out, stem)
    wanted = {k: v for k, v in paths.items() if quicklooks or not k.endswith("_png")}
    for p in wanted.values():
        check_output(p, overwrite)
    workers = workers or default_workers()
    grid = Grid.from_scene(scene)
    table = model.class_table
    p = model.config.endmembers
    bar = tqdm(total=grid.width * grid.height, unit="px", unit_scale=True, desc=stem,
               disable=not progress, dynamic_ncols=True, smoothing=0.1)
    bar_lock = threading.Lock()
    n_tiles = [0]

    def on_tile(t: Tile) -> None:
        with bar_lock:
            bar.update(t.pixels)
            n_tiles[0] += 1

    t0 = time.perf_counter()
    ds = predict(scene, model, window=window, halo=halo, on_tile=on_tile, check=False)
    co = creation_options or {}
    sinks: list[RasterSink] = []
    try:
        float_nan = {"dtype": "float32", "nodata": float("nan")}
        specs = {  # output: (bands, options); the class map alone carries the class table
            "classes": (1, {"dtype": class_dtype(table), "nodata": 0, "class_table": table}),
            "abundances": (p, {**float_nan, "descriptions": model.endmember_names}),
            "confidence": (1, {**float_nan, "descriptions": ["max class probability"]}),
            "error": (1, {**float_nan,
                          "descriptions": ["spectral angle to reconstruction (radians)"]}),
        }
        for key, (count, opts) in specs.items():
            opts = dict(opts)
            dtype = opts.pop("dtype")
            sinks.append(RasterSink(paths[key], grid, count, dtype, cog=cog,
                                    overwrite=overwrite, creation_options=co, **opts))
        threads = torch.get_num_threads()
        # Parallelism is across windows; one torch thread each keeps the cores from being
        # oversubscribed and makes results independent of the worker count.
        torch.set_num_threads(1)
        try:
            da.store([ds[key].data for key in specs],
                     [_Target(sink, planar=key == "abundances")
                      for key, sink in zip(specs, sinks, strict=True)],
                     lock=False, scheduler="threads", num_workers=workers)
        finally:
            torch.set_num_threads(threads)
        for s in sinks:
            s.commit()
    except BaseException:
        for s in sinks:
            s.abort()
        bar.leave = False  # clear the bar so the error message stands on its own line
        bar.close()
        raise
    bar.close()
    spectra, wl = model_endmembers(model)
    write_library(paths["library_sli"].with_suffix(""), spectra, model.endmember_names, wl,
                  overwrite=overwrite, description=f"hsimap endmembers of {stem}")
    if quicklooks:
        from hsimap.quicklook import abundances_png, classes_png, endmembers_png

        classes_png(paths["classes"], table, paths["classes_png"])
        abundances_png(paths["abundances"], paths["abundances_png"])
        endmembers_png(spectra, wl, model.endmember_names, paths["endmembers_png"])
    return PredictReport(wanted, grid.width * grid.height, time.perf_counter() - t0, n_tiles[0])


def read_decimated(path: Path, max_side: int = 1000) -> np.ndarray:
    """A raster read at most ``max_side`` px a side (overview-friendly, bounded memory)."""
    with rasterio.open(path) as src:
        f = max(1, int(np.ceil(max(src.width, src.height) / max_side)))
        shape = (src.count, max(1, src.height // f), max(1, src.width // f))
        return src.read(out_shape=shape, resampling=Resampling.nearest)


def save_figure(fig, path: Path) -> None:
    """Save a matplotlib figure under a temporary name, then rename it."""
    import matplotlib.pyplot as plt

    tmp = temp_name(path)
    try:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)


