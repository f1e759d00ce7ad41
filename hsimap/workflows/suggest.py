"""Where to label next: ``hsimap suggest`` (experimental).

The pixels where the model is least sure, by the margin between its two most probable classes
(or the entropy of its probabilities), spread over the scene:

- the scene is cut into cells of :data:`CELL` px on its own grid; each cell gives at most
  ``per_window`` candidates, its least sure pixels at least ``min_distance`` apart, so that one
  confusing field does not take every point;
- the points are the least sure candidates of all cells, taken in order of uncertainty, each
  at least ``min_distance`` from the points already taken: no point is surer than a candidate
  left unused except where the spread rules exclude that candidate.

From a scene and its model (the probabilities are computed window by window, as predict does)
or from a probabilities raster that ``predict --probabilities`` wrote: both use the same cells,
so they give the same points. Pixels already labelled (``labels``) are passed over. Ties are
broken by a fixed pseudo-random order of the pixels (``seed``), not by position or by the
order windows finish.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import xarray as xr

from hsimap.design import distance_in_pixels
from hsimap.errors import HsimapError

MEASURES = ("margin", "entropy")
CELL = 64   # px: the spread cells, on the scene's grid whatever the model's window


@dataclass
class SuggestOptions:
    n: int = 100
    measure: str = "margin"
    per_window: int | None = None   # candidates per cell; default: 3, more where cells are few
    min_distance: str | float | None = "5"   # pixels, or metres ("150m")
    seed: int = 0
    workers: int | None = None
    overwrite: bool = False
    progress: bool = False

    def check(self) -> None:
        if self.n < 1:
            raise HsimapError(f"-n must be at least 1, got {self.n}")
        if self.per_window is not None and self.per_window < 1:
            raise HsimapError(f"--per-window must be at least 1, got {self.per_window}")
        if self.measure not in MEASURES:
            raise HsimapError(f"--measure must be one of {', '.join(MEASURES)}")


def margin(prob: np.ndarray) -> np.ndarray:
    """Per pixel of (C, h, w) probabilities, the most probable class's lead over the second, in
    [0, 1]: lower is less sure. NaN stays NaN."""
    top = np.sort(prob, axis=0)[-2:]
    return top[1] - top[0]


def entropy(prob: np.ndarray) -> np.ndarray:
    """Per pixel of (C, h, w) probabilities, their entropy over log C, in [0, 1]: higher is
    less sure. NaN stays NaN."""
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.nansum(np.where(prob > 0, prob * np.log(prob), 0.0), axis=0)
    h = h / math.log(prob.shape[0])
    return np.where(np.isnan(prob).any(0), np.nan, h)


def uncertainty(prob: np.ndarray, measure: str = "margin") -> np.ndarray:
    """How unsure the model is, in [0, 1], higher less sure: 1 - margin, or the entropy."""
    return 1.0 - margin(prob) if measure == "margin" else entropy(prob)


@dataclass
class _Pool:
    """Candidate pixels (global rows and columns) with what is written about them."""

    rows: np.ndarray
    cols: np.ndarray
    unsure: np.ndarray      # the ordering key: higher is less sure
    margin: np.ndarray
    entropy: np.ndarray
    cls: np.ndarray         # class index (0..C-1)

    @classmethod
    def concat(cls, pools: list[_Pool]) -> _Pool:
        if not pools:
            z = np.zeros(0)
            return cls(z.astype(np.int64), z.astype(np.int64), z, z, z, z.astype(np.int64))
        return cls(*(np.concatenate([getattr(p, f) for p in pools])
                     for f in ("rows", "cols", "unsure", "margin", "entropy", "cls")))

    def take(self, idx: np.ndarray) -> _Pool:
        return _Pool(self.rows[idx], self.cols[idx], self.unsure[idx], self.margin[idx],
                     self.entropy[idx], self.cls[idx])


def _tiebreak(rows: np.ndarray, cols: np.ndarray, seed: int) -> np.ndarray:
    """A fixed pseudo-random rank per pixel (a multiplicative hash of its position)."""
    h = (rows.astype(np.uint64) * np.uint64(0x9E3779B1) + cols.astype(np.uint64)
         * np.uint64(0x85EBCA77) + np.uint64(seed) * np.uint64(0xC2B2AE3D))
    return (h ^ (h >> np.uint64(15))) & np.uint64(0xFFFFFFFF)


def _order(pool: _Pool, seed: int) -> np.ndarray:
    """Least sure first, ties in the fixed pseudo-random order."""
    return np.lexsort((_tiebreak(pool.rows, pool.cols, seed), -pool.unsure))


def block_pool(prob: np.ndarray, known: np.ndarray | None, row0: int, col0: int, keep: int,
               measure: str, seed: int) -> _Pool:
    """The ``keep`` least sure valid, unlabelled pixels of a (C, h, w) block whose first pixel
    is (``row0``, ``col0``) on the scene grid."""
    m, e = margin(prob), entropy(prob)
    key = 1.0 - m if measure == "margin" else e
    ok = np.isfinite(key)
    if known is not None:
        ok &= ~known
    r, c = np.nonzero(ok)
    pool = _Pool(r + row0, c + col0, key[r, c], m[r, c], e[r, c],
                 np.argmax(np.nan_to_num(prob[:, r, c], nan=-1.0), axis=0))
    return pool.take(_order(pool, seed)[:keep])


def _spread(pool: _Pool, order: np.ndarray, n: int, dist: float) -> np.ndarray:
    """Indices of up to ``n`` pixels of ``pool``, visited in ``order``, each at least ``dist``
    from those taken before it (a hash grid of ``dist``-sized buckets: n log n in all)."""
    taken: list[int] = []
    d2 = dist * dist
    size = max(dist, 1.0)
    buckets: dict[tuple[int, int], list[int]] = {}
    for i in order:
        if len(taken) == n:
            break
        r, c = int(pool.rows[i]), int(pool.cols[i])
        br, bc = int(r // size), int(c // size)
        if d2 > 0 and any((r - pool.rows[j]) ** 2 + (c - pool.cols[j]) ** 2 < d2
                          for dr in (-1, 0, 1) for dc in (-1, 0, 1)
                          for j in buckets.get((br + dr, bc + dc), ())):
            continue
        taken.append(int(i))
        buckets.setdefault((br, bc), []).append(int(i))
    return np.asarray(taken, np.int64)


def _pool_size(k: int, dist: float) -> int:
    """Candidates a cell must keep so that its spread choice of ``k`` sees every pixel it
    would have looked at: each pick rules out at most the pixels of a disc of radius dist."""
    return k * (int(math.pi * (dist + 1) ** 2) + 1)


def per_window(opts: SuggestOptions, cells: int) -> int:
    """Candidates per cell: as asked, or 3, or twice what n needs where cells are few."""
    if opts.per_window is not None:
        return opts.per_window
    return max(3, math.ceil(2 * opts.n / max(1, cells)))


def _cells(shape: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    h, w = shape
    return [(r, c, min(CELL, h - r), min(CELL, w - c))
            for r in range(0, h, CELL) for c in range(0, w, CELL)]


def _blocks_from_model(scene, model, opts: SuggestOptions, known: np.ndarray | None,
                       keep: int) -> list[_Pool]:
    """Each tile core cut along the cells' lines, each piece's least sure pixels."""
    from hsimap.engine import check_workers, map_tiles
    from hsimap.inference import batch_products, prepare
    from hsimap.progress import TileProgress

    tiles = prepare(scene, model)
    by_origin = {(t.row, t.col): t for t in tiles}

    def fn(windows):
        out = []
        for w, p in zip(windows, batch_products(model, windows), strict=True):
            t = by_origin[w[2]]
            rs, cs = t.core_in_read
            core = p.probabilities[:, rs, cs]
            r0, c0 = t.core_rows.start, t.core_cols.start
            pools = []
            for a in range(r0 - r0 % CELL, t.core_rows.stop, CELL):
                for b in range(c0 - c0 % CELL, t.core_cols.stop, CELL):
                    ra, rb = max(a, r0), min(a + CELL, t.core_rows.stop)
                    ca, cb = max(b, c0), min(b + CELL, t.core_cols.stop)
                    kn = known[ra:rb, ca:cb] if known is not None else None
                    pools.append(block_pool(core[:, ra - r0:rb - r0, ca - c0:cb - c0], kn, ra,
                                            ca, keep, opts.measure, opts.seed))
            out.append(_Pool.concat(pools))
        return out

    bar = TileProgress(scene, "suggest", enabled=opts.progress)
    try:
        return map_tiles(scene, tiles, fn, workers=check_workers(opts.workers),
                         valid_bands=model.band_indices, on_tile=bar.on_tile)
    finally:
        bar.close()


def _blocks_from_raster(path: Path, opts: SuggestOptions, known: np.ndarray | None,
                        keep: int) -> list[_Pool]:
    from hsimap.io.probabilities import read_probabilities

    pools = []
    for r0, c0, h, w in _cells(known.shape if known is not None else _shape(path)):
        prob = read_probabilities(path, (slice(r0, r0 + h), slice(c0, c0 + w)))
        kn = known[r0:r0 + h, c0:c0 + w] if known is not None else None
        pools.append(block_pool(prob, kn, r0, c0, keep, opts.measure, opts.seed))
    return pools


def _shape(path: Path) -> tuple[int, int]:
    with rasterio.open(path) as src:
        return src.height, src.width


@dataclass
class Suggestions:
    rows: np.ndarray
    cols: np.ndarray
    margin: np.ndarray
    entropy: np.ndarray
    class_ids: np.ndarray
    class_names: np.ndarray
    candidates: int


def suggest_pixels(source: str | Path | xr.DataArray, opts: SuggestOptions, *, model=None,
                   labels: np.ndarray | None = None) -> Suggestions:
    """The pixels :func:`suggest` writes, without writing them (for scripts and benchmarks).
    ``source`` may also be a scene already open (:func:`hsimap.open_scene`), with ``model``."""
    from hsimap.io.probabilities import is_probabilities, probability_classes

    opts.check()
    if isinstance(source, xr.DataArray):
        if model is None:
            raise HsimapError("suggesting from a scene needs its model")
        crs, transform = source.rio.crs, source.rio.transform()
        shape, probability_raster = (source.sizes["y"], source.sizes["x"]), False
    else:
        with rasterio.open(source) as src:
            crs, transform, shape = src.crs, src.transform, (src.height, src.width)
        probability_raster = is_probabilities(source)
    known = None
    if labels is not None:
        if labels.shape != shape:
            raise HsimapError(f"labels are {labels.shape}, the scene {shape}")
        known = labels > 0
    dist = distance_in_pixels(opts.min_distance, crs, transform)
    k = per_window(opts, len(_cells(shape)))
    keep = _pool_size(k, dist)
    if model is not None:
        if probability_raster:
            raise HsimapError(f"{source}: a probabilities raster; suggest from it without "
                              "--model, or give the scene")
        from hsimap.io.scene import open_scene

        scene = source if isinstance(source, xr.DataArray) else open_scene(source)
        blocks = _blocks_from_model(scene, model, opts, known, keep)
        ids, names = list(model.class_table.ids), list(model.class_table.names)
    elif probability_raster:
        blocks = _blocks_from_raster(Path(source), opts, known, keep)
        ids, names = probability_classes(source)
    else:
        raise HsimapError(f"{source}: give --model to suggest from a scene, or a "
                          "probabilities raster (predict --probabilities)")
    pool = _Pool.concat(blocks)
    if not len(pool.rows):
        raise HsimapError(f"{source}: no unlabelled valid pixel to suggest")
    # Each cell's own spread choice, then the least sure of all cells' candidates.
    cell = (pool.rows // CELL) * (shape[1] // CELL + 1) + pool.cols // CELL
    order = _order(pool, opts.seed)
    by_cell = order[np.argsort(cell[order], kind="stable")]   # each cell's, least sure first
    starts = np.flatnonzero(np.diff(cell[by_cell], prepend=-1))
    cand = pool.take(np.concatenate([_spread(pool, mine, k, dist)
                                     for mine in np.split(by_cell, starts[1:])]))
    pick = _spread(cand, _order(cand, opts.seed), opts.n, dist)
    got = cand.take(pick)
    if len(pick) < opts.n:
        warnings.warn(f"{len(pick)} of {opts.n} points: no more unlabelled valid pixels "
                      f"{dist:g} px apart, {k} at most per {CELL} x {CELL} px cell (raise "
                      "--per-window or lower --min-distance for more)", stacklevel=2)
    return Suggestions(got.rows, got.cols, got.margin, got.entropy,
                       np.asarray(ids, np.int64)[got.cls],
                       np.array([names[i] for i in got.cls], dtype=object), len(cand.rows))


@dataclass
class SuggestReport:
    path: Path
    points: int
    per_class: dict[str, int]
    candidates: int


def suggest(source: str | Path, output: str | Path, opts: SuggestOptions | None = None, *,
            model=None, labels: np.ndarray | None = None,
            inputs: list[str | Path] | None = None) -> SuggestReport:
    """Write the ``opts.n`` points worth labelling next to ``output`` (GeoPackage): fields
    ``margin`` (the most probable class's lead over the second: lower is less sure) and
    ``entropy`` (of the probabilities over log C: higher is less sure), whichever ordered them.

    ``source``: a scene (with ``model``, a loaded model) or a probabilities raster of
    ``predict --probabilities``. ``labels``: the pixels already labelled (non-zero), on the
    scene's grid, which are passed over. ``inputs``: other files the caller read (the labels'
    file), which ``output`` must not be.
    """
    from hsimap.io.files import refuse_inputs
    from hsimap.io.points import write_points

    opts = opts or SuggestOptions()
    opts.check()
    out = Path(output)
    if out.suffix.lower() != ".gpkg":
        raise HsimapError(f"{out}: name the suggestions .gpkg")
    refuse_inputs({"-o": out}, [source if not isinstance(source, xr.DataArray) else None,
                                *(inputs or [])])
    with rasterio.open(source) as src:
        crs, transform = src.crs, src.transform
    if crs is None:
        raise HsimapError(f"{source}: no CRS, so points cannot be placed in map coordinates")
    s = suggest_pixels(source, opts, model=model, labels=labels)
    n = len(s.rows)
    write_points(out, s.rows, s.cols, transform, crs, {
        "suggest_id": np.arange(1, n + 1, dtype=np.int32), "map_class": s.class_ids,
        "map_class_name": s.class_names, "margin": s.margin.astype(np.float64),
        "entropy": s.entropy.astype(np.float64)}, overwrite=opts.overwrite,
        metadata={"HSIMAP_SUGGEST": f"measure={opts.measure} n={opts.n} "
                                    f"per_window={opts.per_window} "
                                    f"min_distance={opts.min_distance} seed={opts.seed}"})
    per_class = {c: int((s.class_names == c).sum()) for c in dict.fromkeys(s.class_names)}
    return SuggestReport(out, n, per_class, s.candidates)
