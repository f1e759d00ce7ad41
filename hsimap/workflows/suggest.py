"""Where to label next: ``hsimap suggest`` (experimental).

The pixels where the model is least sure, by the margin between its two most probable classes
(or the entropy of its probabilities), spread over the scene and over the predicted classes:

- at most ``per_window`` candidates from each window of the prediction grid, at least
  ``min_distance`` apart, so that one confusing field does not take every point;
- the points taken a predicted class at a time, in turn, most uncertain first, so that every
  class the map shows gets its share.

From a scene and its model (the probabilities are computed window by window, as predict does)
or from a probabilities raster that ``predict --probabilities`` wrote. Pixels already
labelled (``labels``) are passed over.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import xarray as xr

from hsimap.design import parse_distance
from hsimap.errors import HsimapError
from hsimap.io.files import atomic_output

MEASURES = ("margin", "entropy")


@dataclass
class SuggestOptions:
    n: int = 100
    measure: str = "margin"
    per_window: int | None = None   # default: 3, or more where windows are too few for n
    window: int = 64              # candidates' window on a probabilities raster
    min_distance: str | float | None = "5"   # pixels, or metres ("150m")
    seed: int = 0
    workers: int | None = None
    overwrite: bool = False

    def check(self) -> None:
        if self.n < 1:
            raise HsimapError(f"-n must be at least 1, got {self.n}")
        if self.per_window is not None and self.per_window < 1:
            raise HsimapError(f"--per-window must be at least 1, got {self.per_window}")
        if self.measure not in MEASURES:
            raise HsimapError(f"--measure must be one of {', '.join(MEASURES)}")


def uncertainty(prob: np.ndarray, measure: str = "margin") -> np.ndarray:
    """Per pixel of (C, h, w) probabilities, how unsure the model is, in [0, 1]: one minus the
    margin between the two most probable classes, or the entropy over log C. NaN stays NaN."""
    if measure == "margin":
        top = np.sort(prob, axis=0)[-2:]
        return 1.0 - (top[1] - top[0])
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.nansum(np.where(prob > 0, prob * np.log(prob), 0.0), axis=0)
    h = h / math.log(prob.shape[0])
    return np.where(np.isnan(prob).any(0), np.nan, h)


def window_candidates(prob: np.ndarray, known: np.ndarray | None, k: int, measure: str,
                      min_distance: float, rng: np.random.Generator
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The ``k`` most uncertain pixels of one window's (C, h, w) probabilities, at least
    ``min_distance`` apart, none of them ``known``: (rows, cols, uncertainty, class index)."""
    u = uncertainty(prob, measure)
    u = np.where(np.isnan(u), -np.inf, u)
    if known is not None:
        u = np.where(known, -np.inf, u)
    # Ties (a flat window) broken at random, not by position.
    order = np.lexsort((rng.random(u.size), -u.ravel()))
    rows, cols, vals = [], [], []
    for idx in order:
        if not np.isfinite(u.flat[idx]) or len(rows) == k:
            break
        r, c = divmod(int(idx), u.shape[1])
        far = all((r - a) ** 2 + (c - b) ** 2 >= min_distance ** 2
                  for a, b in zip(rows, cols, strict=True))
        if far:
            rows.append(r)
            cols.append(c)
            vals.append(float(u.flat[idx]))
    rows_a, cols_a = np.asarray(rows, np.int64), np.asarray(cols, np.int64)
    cls = np.nanargmax(prob[:, rows_a, cols_a], axis=0) if len(rows) else np.zeros(0, np.int64)
    return rows_a, cols_a, np.asarray(vals), cls


def choose(rows: np.ndarray, cols: np.ndarray, u: np.ndarray, cls: np.ndarray, n: int,
           min_distance: float) -> np.ndarray:
    """Indices of ``n`` candidates: the predicted classes in turn, each its most uncertain
    candidate not within ``min_distance`` of one already taken."""
    queues = {c: list(np.flatnonzero(cls == c)[np.argsort(-u[cls == c], kind="stable")])
              for c in np.unique(cls)}
    taken: list[int] = []
    d2 = min_distance ** 2
    while len(taken) < n and any(queues.values()):
        for c in sorted(queues):
            q = queues[c]
            while q:
                i = q.pop(0)
                if all((rows[i] - rows[j]) ** 2 + (cols[i] - cols[j]) ** 2 >= d2
                       for j in taken):
                    taken.append(i)
                    break
            if len(taken) == n:
                break
    return np.asarray(taken, np.int64)


def per_window(opts: SuggestOptions, windows: int) -> int:
    """Candidates per window: as asked, or 3, or twice what n needs where windows are few."""
    if opts.per_window is not None:
        return opts.per_window
    return max(3, math.ceil(2 * opts.n / max(1, windows)))


@dataclass
class SuggestReport:
    path: Path
    points: int
    per_class: dict[str, int]
    candidates: int


def _candidates_from_model(scene, model, opts: SuggestOptions, known: np.ndarray | None,
                           min_distance: float):
    from hsimap.engine import check_workers, map_tiles, scene_tiles
    from hsimap.inference import batch_products

    rng = np.random.default_rng(opts.seed)
    tiles = scene_tiles(scene, model.window, model.halo)
    k = per_window(opts, len(tiles))

    def fn(windows):
        return [p.probabilities for p in batch_products(model, windows)]

    probs = map_tiles(scene, tiles, fn, workers=check_workers(opts.workers),
                      valid_bands=model.band_indices)
    found = []
    for t, prob in zip(tiles, probs, strict=True):
        rs, cs = t.core_in_read
        core = prob[:, rs, cs]
        kn = known[t.core_rows, t.core_cols] if known is not None else None
        r, c, u, cls = window_candidates(core, kn, k, opts.measure, min_distance, rng)
        found.append((r + t.core_rows.start, c + t.core_cols.start, u, cls))
    return found, list(model.class_table.ids), list(model.class_table.names)


def _candidates_from_raster(path: Path, opts: SuggestOptions, known: np.ndarray | None,
                            min_distance: float):
    from rasterio.windows import Window

    rng = np.random.default_rng(opts.seed)
    found = []
    with rasterio.open(path) as src:
        k = per_window(opts, math.ceil(src.height / opts.window) * math.ceil(src.width /
                                                                            opts.window))
        names = [d or f"class {i + 1}" for i, d in enumerate(src.descriptions)]
        scale = src.scales[0] if src.dtypes[0] == "uint8" else 1.0
        for r0 in range(0, src.height, opts.window):
            for c0 in range(0, src.width, opts.window):
                w = Window(c0, r0, min(opts.window, src.width - c0),
                           min(opts.window, src.height - r0))
                raw = src.read(window=w)
                prob = raw.astype(np.float32) * np.float32(scale)
                if src.nodata is not None and not math.isnan(src.nodata):
                    prob[raw == src.nodata] = np.nan
                kn = known[r0:r0 + w.height, c0:c0 + w.width] if known is not None else None
                r, c, u, cls = window_candidates(prob, kn, k, opts.measure, min_distance, rng)
                found.append((r + r0, c + c0, u, cls))
    return found, None, names


@dataclass
class Suggestions:
    rows: np.ndarray
    cols: np.ndarray
    uncertainty: np.ndarray
    class_ids: np.ndarray
    class_names: np.ndarray
    candidates: int


def suggest_pixels(source: str | Path | xr.DataArray, opts: SuggestOptions, *, model=None,
                   labels: np.ndarray | None = None) -> Suggestions:
    """The pixels :func:`suggest` writes, without writing them (for scripts and benchmarks).
    ``source`` may also be a scene already open (:func:`hsimap.open_scene`), with ``model``."""
    opts.check()
    if isinstance(source, xr.DataArray):
        if model is None:
            raise HsimapError("suggesting from a scene needs its model")
        crs, transform = source.rio.crs, source.rio.transform()
        shape, probability_raster = (source.sizes["y"], source.sizes["x"]), False
    else:
        with rasterio.open(source) as src:
            crs, transform, shape = src.crs, src.transform, (src.height, src.width)
            probability_raster = (src.units and src.units[0] == "probability"
                                  and src.count > 1 and "HSIMAP_PROBABILITIES" in src.tags())
    known = None
    if labels is not None:
        if labels.shape != shape:
            raise HsimapError(f"labels are {labels.shape}, the scene {shape}")
        known = labels > 0
    dist, unit = parse_distance(opts.min_distance)
    if unit == "m":
        if crs is None or not crs.is_projected:
            raise HsimapError("--min-distance in metres needs a projected CRS; give pixels")
        dist = dist / (abs(transform.a) * crs.linear_units_factor[1])
    if model is not None:
        from hsimap.io.scene import open_scene

        scene = source if isinstance(source, xr.DataArray) else open_scene(source)
        found, ids, names = _candidates_from_model(scene, model, opts, known, dist)
    elif probability_raster:
        found, _, names = _candidates_from_raster(Path(source), opts, known, dist)
        ids = list(range(1, len(names) + 1))
        with rasterio.open(source) as src:
            tagged = src.tags().get("HSIMAP_CLASS_IDS")
        if tagged:
            ids = [int(v) for v in tagged.split(",")]
    else:
        raise HsimapError(f"{source}: give --model to suggest from a scene, or a "
                          "probabilities raster (predict --probabilities)")
    rows = np.concatenate([f[0] for f in found])
    cols = np.concatenate([f[1] for f in found])
    u = np.concatenate([f[2] for f in found])
    cls = np.concatenate([f[3] for f in found]).astype(np.int64)
    if not len(rows):
        raise HsimapError(f"{source}: no unlabelled valid pixel to suggest")
    pick = choose(rows, cols, u, cls, opts.n, dist)
    return Suggestions(rows[pick], cols[pick], u[pick], np.asarray(ids, np.int32)[cls[pick]],
                       np.array([names[k] for k in cls[pick]], dtype=object), len(rows))


def suggest(source: str | Path, output: str | Path, opts: SuggestOptions | None = None, *,
            model=None, labels: np.ndarray | None = None) -> SuggestReport:
    """Write the ``opts.n`` points worth labelling next to ``output`` (GeoPackage).

    ``source``: a scene (with ``model``, a loaded model) or a probabilities raster of
    ``predict --probabilities``. ``labels``: the pixels already labelled (non-zero), on the
    scene's grid, which are passed over.
    """
    import pyogrio
    import shapely

    opts = opts or SuggestOptions()
    opts.check()
    out = Path(output)
    if out.suffix.lower() != ".gpkg":
        raise HsimapError(f"{out}: name the suggestions .gpkg")
    with rasterio.open(source) as src:
        crs, transform = src.crs, src.transform
    if crs is None:
        raise HsimapError(f"{source}: no CRS, so points cannot be placed in map coordinates")
    s = suggest_pixels(source, opts, model=model, labels=labels)
    xs, ys = rasterio.transform.xy(transform, s.rows, s.cols, offset="center")
    geoms = shapely.points(np.asarray(xs, float), np.asarray(ys, float))
    n = len(s.rows)
    with atomic_output(out, opts.overwrite) as tmp:
        pyogrio.raw.write(
            tmp, shapely.to_wkb(geoms),
            [np.arange(1, n + 1, dtype=np.int32), s.class_ids, s.class_names,
             s.uncertainty.astype(np.float64), np.zeros(n, np.int32)],
            fields=["suggest_id", "map_class", "map_class_name", opts.measure, "reference"],
            field_mask=[np.zeros(n, bool)] * 4 + [np.ones(n, bool)],
            geometry_type="Point", crs=crs.to_wkt(), driver="GPKG", layer=out.stem,
            layer_metadata={"HSIMAP_SUGGEST": f"measure={opts.measure} n={opts.n} "
                                              f"per_window={opts.per_window} seed={opts.seed}"})
    per_class = {c: int((s.class_names == c).sum()) for c in dict.fromkeys(s.class_names)}
    return SuggestReport(out, n, per_class, s.candidates)
