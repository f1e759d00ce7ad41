"""Running a per-window function over a whole scene, and streaming its results to rasters.

The one loop of hsimap: :func:`tile_array` turns a function of one read window into a lazy
dask array over the scene (one task per tile, halos computed and discarded, cores kept), and
:func:`store` writes such arrays into :class:`~hsimap.io.rasters.RasterSink` s window by window,
on dask's threaded scheduler. Prediction and unmixing both go through here, so both get the same
parallelism, memory bound (window size x workers) and all-or-nothing files.
"""

from __future__ import annotations

import operator
import threading
from collections.abc import Callable, Sequence

import dask
import dask.array as da
import numpy as np
import xarray as xr

from hsimap.errors import HsimapError
from hsimap.io.gdal import STREAM_CACHE_BYTES, bounded_write_cache
from hsimap.io.rasters import RasterSink
from hsimap.io.scene import read_window
from hsimap.runtime import available_cores, fewer_malloc_arenas, keep_freed_blocks, torch_threads
from hsimap.windows import Tile, tiles

# values (bands, h, w) in physical units, valid (h, w), origin (row, col) of the read window
# -> (planes, h, w) float32 results for the whole read window.
WindowFunction = Callable[[np.ndarray, np.ndarray, tuple[int, int]], np.ndarray]


def default_workers() -> int:
    """Windows in flight by default: one per core this process may use."""
    return available_cores()


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


# windows [(values, valid, origin), ...] of one size -> one (planes, h, w) result each.
BatchFunction = Callable[[list[tuple[np.ndarray, np.ndarray, tuple[int, int]]]],
                         list[np.ndarray]]


def tile_array(scene: xr.DataArray, grid: list[Tile], fn: WindowFunction | None,
               planes: int, *,
               name: str, on_tile: Callable[[Tile], None] | None = None,
               serialize: bool = False, valid_bands: np.ndarray | None = None,
               batch_fn: BatchFunction | None = None, batch: int = 1) -> da.Array:
    """A lazy (planes, y, x) float32 array: ``fn`` on every tile's read window, cores kept.

    Args:
        name: a token unique to the inputs (scene, model, window, halo): dask keys.
        on_tile: called after each tile is computed (progress).
        serialize: one call at a time (a GPU: calls would only queue for it).
        valid_bands: the bands a pixel needs data in to be valid (the ones ``fn`` uses).
        batch_fn, batch: with ``batch`` > 1, ``batch_fn`` runs up to ``batch`` tiles of one
            size (neighbours in raster order) in one call, one dask task per call: a GPU
            takes several windows in one forward pass.
    """
    lock = threading.Lock() if serialize else None
    if (batch > 1 or fn is None) and batch_fn is None:
        raise ValueError("tile_array needs fn, or batch_fn for batches")

    def call(windows: list) -> list[np.ndarray]:
        if batch > 1 or fn is None:
            return batch_fn(windows)
        return [fn(*windows[0])]

    def run_group(group: list[Tile]) -> list[np.ndarray]:
        windows = []
        for t in group:
            values, valid = read_window(scene, t.rows, t.cols, valid_bands=valid_bands)
            windows.append((values, valid, (t.row, t.col)))
        if lock is not None:
            with lock:
                results = call(windows)
        else:
            results = call(windows)
        cores = []
        for t, result in zip(group, results, strict=True):
            rs, cs = t.core_in_read
            cores.append(np.ascontiguousarray(result[:, rs, cs], dtype=np.float32))
            if on_tile is not None:
                on_tile(t)
        return cores

    groups: list[list[int]] = []
    for i, t in enumerate(grid):
        last = groups[-1] if groups else None
        if last is not None and len(last) < max(1, batch) and \
                (grid[last[0]].height, grid[last[0]].width) == (t.height, t.width):
            last.append(i)
        else:
            groups.append([i])
    rows: dict[int, list[da.Array]] = {}
    # Named, so that dask does not tokenize the function: that pickles its closure, the model
    # with it, once per task (2.6 of 14 s of a 512 x 512 predict).
    run = dask.delayed(run_group, pure=True, name=f"hsimap-{name}-run")
    for g, members in enumerate(groups):
        d = run([grid[i] for i in members], dask_key_name=f"hsimap-{name}-{g}")
        for j, i in enumerate(members):
            t = grid[i]
            part = dask.delayed(operator.getitem, pure=True)(
                d, j, dask_key_name=f"hsimap-{name}-{g}-{j}")
            block = da.from_delayed(part, shape=(planes, t.core_height, t.core_width),
                                    dtype=np.float32)
            rows.setdefault(t.core_row, []).append(block)
    return da.block([rows[r] for r in sorted(rows)])


def map_tiles(scene: xr.DataArray, grid: list[Tile],
              fn: Callable[[list[tuple[np.ndarray, np.ndarray, tuple[int, int]]]],
                           list[np.ndarray]], *,
              workers: int, batch: int = 1, on_tile: Callable[[Tile], None] | None = None,
              valid_bands: np.ndarray | None = None,
              cache_bytes: int = STREAM_CACHE_BYTES) -> list[np.ndarray]:
    """``fn`` on the read windows of ``grid``'s tiles, ``batch`` tiles to a call, on
    ``workers`` threads of dask's threaded scheduler (one torch thread each); the results in
    the order of ``grid``. For a chosen set of tiles (a test sample) rather than a scene;
    ``cache_bytes`` bounds GDAL's block cache meanwhile."""
    def run(group: list[Tile]) -> list[np.ndarray]:
        windows = []
        for t in group:
            values, valid = read_window(scene, t.rows, t.cols, valid_bands=valid_bands)
            windows.append((values, valid, (t.row, t.col)))
        results = fn(windows)
        if on_tile is not None:
            for t in group:
                on_tile(t)
        return results

    groups = [grid[i:i + batch] for i in range(0, len(grid), max(1, batch))]
    tasks = [dask.delayed(run, pure=False)(g) for g in groups]
    fewer_malloc_arenas()
    keep_freed_blocks()
    with torch_threads(1), bounded_write_cache(cache_bytes):
        done = dask.compute(*tasks, scheduler="threads", num_workers=workers)
    return [r for group in done for r in group]


class _Target:
    """``dask.array.store`` target: ``target[band, rows, cols] = block`` writes a window."""

    def __init__(self, sink: RasterSink):
        self.sink = sink

    def __setitem__(self, key: tuple[slice, ...], value: np.ndarray) -> None:
        rows, cols = key[-2], key[-1]
        self.sink.write(value, rows.start or 0, cols.start or 0)


def store(arrays: Sequence[da.Array], sinks: Sequence[RasterSink], *, workers: int) -> None:
    """Compute ``arrays`` ((bands, y, x) or (y, x)) into ``sinks`` on ``workers`` threads, then
    commit every sink; on any error (or Ctrl-C) abort them all, leaving no file behind."""
    fewer_malloc_arenas()
    keep_freed_blocks()
    # Parallelism is across windows; one torch thread each keeps the cores from being
    # oversubscribed and makes results independent of the worker count.
    try:
        with torch_threads(1), bounded_write_cache():
            da.store(list(arrays), [_Target(s) for s in sinks], lock=False,
                     scheduler="threads", num_workers=workers)
            for s in sinks:
                s.commit()
    except BaseException:
        for s in sinks:
            s.abort()
        raise
