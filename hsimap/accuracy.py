"""Map accuracy as land-cover producers report it: mapped area per class, and area-adjusted
accuracy and area estimates with 95% confidence intervals from a stratified reference sample.

The estimators are those of Olofsson et al. (2014), "Good practices for estimating area and
assessing accuracy of land change", Remote Sensing of Environment 148: 42-57, equations 2-10,
for a sample stratified by the map's classes: the map's class proportions weight each
stratum, so that a class drawn more often than its area does not bias the estimates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import rasterio
from rasterio.windows import Window

from hsimap.errors import HsimapError

Z95 = 1.959964


@dataclass
class MappedArea:
    """Pixels of each class in a class map, and their area in hectares (None without a CRS)."""

    pixels: np.ndarray            # per class id, in the order asked for
    hectares: np.ndarray | None


def mapped_area(path, class_ids: list[int]) -> MappedArea:
    """Count each class's pixels in the class map at ``path``, block by block, and their area.

    Projected CRS: pixel area from the transform, in the CRS's linear unit. Geographic CRS:
    each row's pixel area on the CRS's ellipsoid (it shrinks towards the poles).
    """
    ids = np.asarray(class_ids)
    with rasterio.open(path) as src:
        top = max(int(ids.max()), 0) + 1
        counts = np.zeros(top, np.int64)
        per_row: np.ndarray | None = None
        row_area = _row_areas_m2(src)
        if row_area is not None:
            per_row = np.zeros(top, np.float64)
        step = 256
        for r0 in range(0, src.height, step):
            h = min(step, src.height - r0)
            block = src.read(1, window=Window(0, r0, src.width, h)).astype(np.int64)
            inside = (block >= 0) & (block < top)
            counts += np.bincount(block[inside], minlength=top)
            if per_row is not None:
                w = np.broadcast_to(row_area[r0:r0 + h, None], block.shape)[inside]
                per_row += np.bincount(block[inside], weights=w, minlength=top)
    hectares = per_row[ids] / 1e4 if per_row is not None else None
    return MappedArea(counts[ids], hectares)


def _row_areas_m2(src) -> np.ndarray | None:
    """Area of one pixel in each row, in m^2; None when the map has no CRS."""
    crs, t = src.crs, src.transform
    if crs is None:
        return None
    if crs.is_projected:
        _, factor = crs.linear_units_factor
        return np.full(src.height, abs(t.a * t.e - t.b * t.d) * factor ** 2)
    from pyproj import CRS, Geod

    geod = CRS.from_user_input(crs.to_wkt()).get_geod() or Geod(ellps="WGS84")
    out = np.empty(src.height)
    for r in range(src.height):
        xs = [t.c, t.c + t.a, t.c + t.a, t.c]
        ys = [t.f + t.e * r, t.f + t.e * r, t.f + t.e * (r + 1), t.f + t.e * (r + 1)]
        out[r] = abs(geod.polygon_area_perimeter(xs, ys)[0])
    return out


@dataclass
class AreaAdjusted:
    """Olofsson et al. (2014) estimates; every ``*_ci95`` is the half-width of the 95% interval.

    Per class (the order of ``class_ids``): estimated area (ha, or pixels without a CRS) and
    the user's and producer's accuracy; overall accuracy.
    """

    area: np.ndarray
    area_ci95: np.ndarray
    users_accuracy: np.ndarray
    users_accuracy_ci95: np.ndarray
    producers_accuracy: np.ndarray
    producers_accuracy_ci95: np.ndarray
    overall_accuracy: float
    overall_accuracy_ci95: float
    unit: str


def area_adjusted(sample: np.ndarray, mapped: np.ndarray, total_area: float, unit: str,
                  names: list[str]) -> AreaAdjusted:
    """Estimates from a reference sample stratified by map class.

    Args:
        sample: (k, k) counts, rows the map's class, columns the reference class.
        mapped: (k,) the map's pixel count per class (the strata sizes N_i).
        total_area: the map's classified area, in ``unit``.
        names: class names, for messages.
    """
    n = np.asarray(sample, dtype=float)
    big_n = np.asarray(mapped, dtype=float)
    n_i = n.sum(axis=1)
    short = [names[i] for i in range(len(n_i)) if big_n[i] > 0 and n_i[i] < 2]
    if short:
        raise HsimapError(f"stratified estimates need at least 2 reference pixels in every "
                          f"mapped class; {', '.join(short)} have fewer")
    w = big_n / big_n.sum()
    share = np.divide(n, n_i[:, None], out=np.zeros_like(n), where=n_i[:, None] > 0)
    p = w[:, None] * share                                    # eq. 4: cell proportions
    dof = np.maximum(n_i - 1, 1)
    users = np.diag(share)                                    # eq. 2
    v_users = users * (1 - users) / dof                       # eq. 6
    overall = float(np.trace(p))                              # eq. 1
    v_overall = float(np.sum(w ** 2 * users * (1 - users) / dof))   # eq. 5
    p_ref = p.sum(axis=0)                                     # eq. 9: reference proportions
    se_ref = np.sqrt(np.sum(w[:, None] ** 2 * share * (1 - share) / dof[:, None], axis=0))  # 10
    producers = np.divide(np.diag(p), p_ref, out=np.full(len(w), np.nan), where=p_ref > 0)
    # eq. 7, with N_i the strata sizes and N_.j the estimated reference totals
    n_ref = (big_n[:, None] * share).sum(axis=0)
    v_prod = np.full(len(w), np.nan)
    for j in range(len(w)):
        if n_ref[j] <= 0:
            continue
        own = big_n[j] ** 2 * (1 - producers[j]) ** 2 * users[j] * (1 - users[j]) / dof[j]
        others = sum(big_n[i] ** 2 * share[i, j] * (1 - share[i, j]) / dof[i]
                     for i in range(len(w)) if i != j)
        v_prod[j] = (own + producers[j] ** 2 * others) / n_ref[j] ** 2
    return AreaAdjusted(
        area=p_ref * total_area, area_ci95=Z95 * se_ref * total_area,
        users_accuracy=users, users_accuracy_ci95=Z95 * np.sqrt(v_users),
        producers_accuracy=producers, producers_accuracy_ci95=Z95 * np.sqrt(v_prod),
        overall_accuracy=overall, overall_accuracy_ci95=Z95 * float(np.sqrt(v_overall)),
        unit=unit)
