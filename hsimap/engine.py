"""Running a per-window function over a whole scene, and streaming its results to rasters.

The one loop of hsimap: :func:`tile_array` turns a function of one read window into a lazy
dask array over the scene (one task per tile, halos computed and discarded, cores kept), and
:func:`store` writes such arrays into :class:`~hsimap.io.rasters.RasterSink` s window by window,
on dask's threaded scheduler. Prediction and unmixing both go through here, so both get the same
parallelism, memory bound (window size x workers) and all-or-nothing files.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable, Sequence

import dask
import dask.array as da
import numpy as np
import torch
import xarray as xr
from tqdm import tqdm

from hsimap.errors import HsimapError
from hsimap.io.rasters import RasterSink, bounded_write_cache
from hsimap.io.scene import read_window
from hsimap.windows import Tile, tiles

# values (bands, h, w) in physical units, valid (h, w), origin (row, col) of the read window
# -> (planes, h, w) float32 results for the whole read window.
WindowFunction = Callable[[np.ndarray, np.ndarray, tuple[int, int]], np.ndarray]


def default_workers() -> int:
    """Windows in flight by default: one per core this process may use."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def check_workers(workers: int | None) -> int:
    """``None`` means the default; anything below 1 is refused rather than replaced."""
    if workers is None:
        return default_workers()
    if workers < 1:
        raise HsimapError(f"--workers must be at least 1, got {workers}")
    return workers


def scene_tiles(scene: xr.DataArray, window: int, halo: int) -> list[Tile]:
    """The scene's tiles, with a one-line error for a window or halo that cannot tile it."""
    try:
        return tiles(scene.sizes["y"], scene.sizes["x"], window, halo)
    except ValueError as exc:
        raise HsimapError(f"window {window}, halo {halo}: {exc}") from None


def tile_array(scene: xr.DataArray, grid: list[Tile], fn: WindowFunction, planes: int, *,
               name: str, on_tile: Callable[[Tile], None] | None = None,
               serialize: bool = False, valid_bands: np.ndarray | None = None) -> da.Array:
    """A lazy (planes, y, x) float32 array: ``fn`` on every tile's read window, cores kept.

    Args:
        name: a token unique to the inputs (scene, model, window, halo): dask keys.
        on_tile: called after each tile is computed (progress).
        serialize: one window at a time (a GPU: windows would only queue for it).
        valid_bands: the bands a pixel needs data in to be valid (the ones ``fn`` uses).
    """
    lock = threading.Lock() if serialize else None

    def run(tile: Tile) -> np.ndarray:
        values, valid = read_window(scene, tile.rows, tile.cols, valid_bands=valid_bands)
        if lock is not None:
            with lock:
                result = fn(values, valid, (tile.row, tile.col))
        else:
            result = fn(values, valid, (tile.row, tile.col))
        rs, cs = tile.core_in_read
        core = np.ascontiguousarray(result[:, rs, cs], dtype=np.float32)
        if on_tile is not None:
            on_tile(tile)
        return core

    rows: dict[int, list[da.Array]] = {}
    for i, t in enumerate(grid):
        d = dask.delayed(run, pure=True)(t, dask_key_name=f"hsimap-{name}-{i}")
        block = da.from_delayed(d, shape=(planes, t.core_height, t.core_width), dtype=np.float32)
        rows.setdefault(t.core_row, []).append(block)
    return da.block([rows[r] for r in sorted(rows)])


class TileProgress:
    """A progress bar in pixels, advanced as tiles finish (from any worker thread)."""

    def __init__(self, scene: xr.DataArray, desc: str, enabled: bool = True):
        self.total = scene.sizes["x"] * scene.sizes["y"]
        self.tiles = 0
        self._lock = threading.Lock()
        self._bar = tqdm(total=self.total, unit="px", unit_scale=True, desc=desc,
                         disable=not enabled, dynamic_ncols=True, smoothing=0.1)

    def on_tile(self, tile: Tile) -> None:
        with self._lock:
            self._bar.update(tile.pixels)
            self.tiles += 1

    def close(self, failed: bool = False) -> None:
        if failed:
            self._bar.leave = False  # clear the bar so the error message stands on its own
        self._bar.close()


class _Target:
    """``dask.array.store`` target: ``target[band, rows, cols] = block`` writes a window."""

    def __init__(self, sink: RasterSink):
        self.sink = sink

    def __setitem__(self, key: tuple[slice, ...], value: np.ndarray) -> None:
        rows, cols = key[-2], key[-1]
        self.sink.write(value, rows.start or 0, cols.start or 0)


def fewer_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's malloc arenas (``M_ARENA_MAX``) for threads started from now on.

    glibc gives each new thread its own heap arena; windows allocated and freed on several
    worker threads fragment them, and a streaming run's RSS crept up with the scene (2048 x 2048
    x 200: peak 2,477 MiB, against 2,145 MiB with two arenas). No-op off glibc.
    """
    try:
        ctypes.CDLL("libc.so.6").mallopt(-8, arenas)  # -8: M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def store(arrays: Sequence[da.Array], sinks: Sequence[RasterSink], *, workers: int) -> None:
    """Compute ``arrays`` ((bands, y, x) or (y, x)) into ``sinks`` on ``workers`` threads, then
    commit every sink; on any error (or Ctrl-C) abort them all, leaving no file behind."""
    fewer_malloc_arenas()
    threads = torch.get_num_threads()
    # Parallelism is across windows; one torch thread each keeps the cores from being
    # oversubscribed and makes results independent of the worker count.
    torch.set_num_threads(1)
    try:
        with bounded_write_cache():
            da.store(list(arrays), [_Target(s) for s in sinks], lock=False,
                     scheduler="threads", num_workers=workers)
            for s in sinks:
                s.commit()
    except BaseException:
        for s in sinks:
            s.abort()
        raise
    finally:
        torch.set_num_threads(threads)
