"""Map accuracy as land-cover producers report it: area-adjusted accuracy and area estimates
with 95% confidence intervals from a stratified reference sample (the mapped area per class is
:mod:`hsimap.io.areas`).

The estimators are those of Olofsson et al. (2014), "Good practices for estimating area and
assessing accuracy of land change", Remote Sensing of Environment 148: 42-57, equations 2-10,
for a sample stratified by the map's classes: the map's class proportions weight each
stratum, so that a class drawn more often than its area does not bias the estimates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hsimap.errors import HsimapError

Z95 = 1.959964


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
    # A class the map does not show has no user's accuracy (0 of 0 pixels): undefined, not 0.
    unmapped = n_i == 0
    return AreaAdjusted(
        area=p_ref * total_area, area_ci95=Z95 * se_ref * total_area,
        users_accuracy=np.where(unmapped, np.nan, users),
        users_accuracy_ci95=np.where(unmapped, np.nan, Z95 * np.sqrt(v_users)),
        producers_accuracy=producers, producers_accuracy_ci95=Z95 * np.sqrt(v_prod),
        overall_accuracy=overall, overall_accuracy_ci95=Z95 * float(np.sqrt(v_overall)),
        unit=unit)
