"""Stratified random sample designs for the accuracy of a class map (Olofsson et al., 2014).

The strata are the map's classes. :func:`sample_size` is the paper's eq. 13: the total size
that gives overall accuracy a target standard error, from the expected user's accuracy of
each class. :func:`allocate` shares it among the strata; :func:`draw` picks the pixels.

Olofsson, P., Foody, G. M., Herold, M., Stehman, S. V., Woodcock, C. E., Wulder, M. A.
(2014). Good practices for estimating area and assessing accuracy of land change. Remote
Sensing of Environment 148, 42-57.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hsimap.errors import HsimapError

ALLOCATIONS = ("proportional", "equal", "olofsson")


def sample_size(strata: np.ndarray, expected_ua: np.ndarray, target_se: float) -> int:
    """Total sample size for a standard error ``target_se`` of overall accuracy (eq. 13).

    Args:
        strata: pixels of each stratum (N_i).
        expected_ua: the user's accuracy expected of each stratum (U_i), in (0, 1].
        target_se: the standard error of overall accuracy aimed at, S(O).
    """
    big_n = np.asarray(strata, dtype=float)
    ua = np.asarray(expected_ua, dtype=float)
    if not 0 < target_se < 1:
        raise HsimapError(f"--target-se must be between 0 and 1, got {target_se}")
    if not np.all((ua > 0) & (ua <= 1)):   # NaN fails too
        raise HsimapError(f"--expected-ua: user's accuracies must be in (0, 1], got "
                          f"{ua[~((ua > 0) & (ua <= 1))][0]:g}")
    w = big_n / big_n.sum()
    s = np.sqrt(ua * (1 - ua))
    n = (w * s).sum() ** 2 / (target_se ** 2 + (w * s ** 2).sum() / big_n.sum())
    return max(1, math.ceil(n))


def _round_to(total: int, shares: np.ndarray) -> np.ndarray:
    """Integers summing to ``total`` in proportion to ``shares`` (largest remainder)."""
    raw = total * shares / shares.sum()
    out = np.floor(raw).astype(np.int64)
    rest = total - int(out.sum())
    out[np.argsort(-(raw - out), kind="stable")[:rest]] += 1
    return out


def allocate(strata: np.ndarray, total: int, allocation: str = "olofsson",
             min_per_class: int = 50) -> np.ndarray:
    """Sample size per stratum.

    ``proportional``: to each stratum's area; ``equal``: the same to each; ``olofsson``: at
    least ``min_per_class`` to each and the rest of ``total`` to the larger strata in
    proportion to their area (the paper's recommendation, section 5.1.1). Every allocation
    then gives each stratum at least ``min_per_class``, and none more than it holds; what a
    stratum cannot hold goes to the others (in proportion to area, or equally for ``equal``),
    so that the sample keeps eq. 13's size wherever the map has the pixels.
    """
    big_n = np.asarray(strata, dtype=np.int64)
    k = len(big_n)
    if allocation not in ALLOCATIONS:
        raise HsimapError(f"--allocation must be one of {', '.join(ALLOCATIONS)}")
    if min_per_class < 0:
        raise HsimapError(f"--min-per-class must be non-negative, got {min_per_class}")
    if allocation == "proportional":
        n = _round_to(total, big_n.astype(float))
    elif allocation == "equal":
        n = _round_to(total, np.ones(k))
    else:
        n = np.zeros(k, np.int64)
        fixed = np.zeros(k, bool)
        while True:  # strata whose proportional share is under the minimum get the minimum
            free = total - min_per_class * int(fixed.sum())
            share = np.where(fixed, 0.0, big_n.astype(float))
            if free <= 0 or share.sum() == 0:
                n = np.where(fixed, min_per_class, 0)
                break
            n = np.where(fixed, min_per_class, _round_to(free, share))
            low = ~fixed & (n < min_per_class)
            if not low.any():
                break
            fixed |= low
    n = np.maximum(n, min_per_class)
    weight = np.ones(k) if allocation == "equal" else big_n.astype(float)
    while True:
        short = int(np.maximum(n - big_n, 0).sum())
        n = np.minimum(n, big_n)
        room = big_n - n
        if short == 0 or not room.any():
            return n
        share = np.where(room > 0, weight, 0.0)
        n = n + _round_to(min(short, int(room.sum())), share)


def parse_distance(text: str | float | None) -> tuple[float, str]:
    """``"3"`` or ``"3px"`` (pixels), or ``"90m"`` (metres), to (value, unit)."""
    if text is None:
        return 0.0, "px"
    s = str(text).strip().lower()
    unit = "m" if s.endswith("m") else "px"
    try:
        v = float(s[:-1] if unit == "m" else s.removesuffix("px"))
    except ValueError:
        raise HsimapError(f"--min-distance: {text!r} is no distance (give pixels, e.g. 3, or "
                          "metres, e.g. 90m)") from None
    if v < 0 or not math.isfinite(v):
        raise HsimapError(f"--min-distance must be non-negative, got {text}")
    return v, unit


def distance_in_pixels(text: str | float | None, crs, transform) -> float:
    """``--min-distance`` in pixels of a grid: the one place metres become pixels (the
    grid's pixel width in its CRS's linear unit)."""
    dist, unit = parse_distance(text)
    if unit == "m":
        if crs is None or not crs.is_projected:
            raise HsimapError("--min-distance in metres needs a map in a projected CRS; give "
                              "it in pixels")
        dist = dist / (abs(transform.a) * crs.linear_units_factor[1])
    return dist


@dataclass
class Design:
    """A stratified sample design: what was asked, the strata and the sizes drawn."""

    class_ids: list[int]
    strata: list[int]               # N_i, pixels of each map class
    planned: list[int]              # n_i allocated
    drawn: list[int]                # n_i drawn (fewer than planned only with a min distance)
    allocation: str
    target_se: float
    expected_ua: list[float]
    min_per_class: int
    min_distance: float             # pixels
    seed: int

    points: str = ""                # digest of the points as drawn (points_digest)

    def to_dict(self) -> dict:
        return {"design": "stratified random", "strata": "map class", "points": self.points,
                "class_ids": self.class_ids, "strata_pixels": self.strata,
                "planned": self.planned, "drawn": self.drawn, "allocation": self.allocation,
                "target_se": self.target_se, "expected_ua": self.expected_ua,
                "min_per_class": self.min_per_class, "min_distance_px": self.min_distance,
                "seed": self.seed}


def points_digest(rows: np.ndarray, cols: np.ndarray) -> str:
    """A digest of a sample's pixels, in drawn order: a sample whose points were moved,
    added, removed or doubled since it was drawn no longer matches it (its estimates would
    assume a design it no longer has)."""
    import hashlib

    pts = np.stack([np.asarray(rows, np.int64), np.asarray(cols, np.int64)], 1)
    return hashlib.sha256(np.ascontiguousarray(pts).tobytes()).hexdigest()[:16]


def draw(classes: np.ndarray, class_ids: list[int], sizes: np.ndarray, *,
         min_distance: float = 0.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``sizes[i]`` pixels of class ``class_ids[i]`` at random, without replacement.

    With ``min_distance`` (pixels, between pixel centres), a pixel closer than that to one
    drawn before is passed over; strata are drawn in turn, a point at a time, so that none is
    favoured. Returns ``(rows, cols)``.
    """
    rng = np.random.default_rng(seed)
    flat = classes.ravel()
    width = classes.shape[1]
    pools = []
    for c, n in zip(class_ids, sizes, strict=True):
        where = np.flatnonzero(flat == c)
        if min_distance <= 0:
            pools.append(rng.choice(where, size=int(n), replace=False))
        else:
            pools.append(rng.permutation(where))
    if min_distance <= 0:
        picked = np.concatenate(pools) if pools else np.zeros(0, np.int64)
        return picked // width, picked % width
    cell = max(min_distance, 1.0)
    grid: dict[tuple[int, int], list[tuple[int, int]]] = {}
    d2 = min_distance ** 2
    reach = int(math.ceil(min_distance / cell))

    def free(r: int, c: int) -> bool:
        gr, gc = int(r // cell), int(c // cell)
        for i in range(gr - reach, gr + reach + 1):
            for j in range(gc - reach, gc + reach + 1):
                for (pr, pc) in grid.get((i, j), ()):
                    if (pr - r) ** 2 + (pc - c) ** 2 < d2:
                        return False
        return True

    cursor = [0] * len(pools)
    need = [int(n) for n in sizes]
    rows, cols = [], []
    active = [k for k in range(len(pools)) if need[k] > 0]
    while active:
        for k in list(active):
            pool = pools[k]
            while cursor[k] < len(pool):
                idx = int(pool[cursor[k]])
                cursor[k] += 1
                r, c = divmod(idx, width)
                if free(r, c):
                    grid.setdefault((int(r // cell), int(c // cell)), []).append((r, c))
                    rows.append(r)
                    cols.append(c)
                    need[k] -= 1
                    break
            if need[k] == 0 or cursor[k] >= len(pool):
                active.remove(k)
    return np.asarray(rows, np.int64), np.asarray(cols, np.int64)
