"""Endmember extraction (VCA) and fully constrained least squares abundances (FCLS)."""

from __future__ import annotations

import numpy as np
from scipy.optimize import nnls

# Pixels VCA and the purification see: a sample of this many, drawn evenly over the scene (or
# over the training windows), is enough to find the simplex's vertices and bounds their cost.
VCA_SAMPLE = 20000


class Basis:
    """The decompositions VCA needs of one set of pixels, each made once: the eigenvectors of
    the covariance (the affine branch, and the simplex volume) and of the correlation (the
    projective branch, made when first asked for). Restarts share them: a 2000-band scene
    spent 95% of its unmixing in 60 decompositions of the same two matrices."""

    def __init__(self, y: np.ndarray):
        self.y = y                                   # (bands, n), float64
        n = y.shape[1]
        self.mean = y.mean(axis=1, keepdims=True)
        self.u, _, _ = np.linalg.svd((y - self.mean) @ (y - self.mean).T / n)
        self._u2: np.ndarray | None = None

    @property
    def u2(self) -> np.ndarray:
        if self._u2 is None:
            self._u2, _, _ = np.linalg.svd(self.y @ self.y.T / self.y.shape[1])
        return self._u2


def vca(pixels: np.ndarray, p: int, seed: int = 0, projection: str = "auto",
        basis: Basis | None = None) -> np.ndarray:
    """Vertex Component Analysis (Nascimento & Bioucas-Dias, 2005).

    Args:
        pixels: (n_pixels, bands) reflectance.
        p: number of endmembers.
        seed: seed of the random projection directions.
        projection: "auto" chooses as the paper does from the estimated SNR; "projective"
            and "affine" force one of its two branches. The projective branch divides every
            pixel by its projection on the mean, which amplifies the noise of dark pixels
            (water, shade): on Jasper Ridge it misses the road and soil (mean SAD 19.5 deg over
            10 seeds) where the affine branch finds them (8.7 deg).
        basis: the pixels' :class:`Basis`, where the caller has it (restarts).

    Returns:
        (p, bands) endmember spectra, each one of the input pixels.
    """
    rng = np.random.default_rng(seed)
    y = np.asarray(pixels, dtype=np.float64).T  # (bands, n)
    bands, n = y.shape
    if p > bands:
        raise ValueError(f"{p} endmembers need at least {p} bands, got {bands}")
    if n < p:
        raise ValueError(f"{p} endmembers need at least {p} pixels, got {n}")
    basis = basis or Basis(y)
    mean = basis.mean
    ud = basis.u[:, : p - 1]
    x_p = ud.T @ (y - mean)
    p_y = np.sum(y**2) / n
    p_x = np.sum(x_p**2) / n + float(np.sum(mean**2))
    snr = 10 * np.log10(max(p_x - p / bands * p_y, 1e-12) / max(p_y - p_x, 1e-12))
    snr_th = 15 + 10 * np.log10(p)
    if projection not in ("auto", "affine", "projective"):
        raise ValueError(f"projection must be auto, affine or projective, not {projection!r}")
    if projection == "affine" or (projection == "auto" and snr < snr_th):
        # Low SNR: project onto the (p-1)-dim subspace and add a constant component.
        proj = ud @ x_p + mean
        x = x_p
        c = np.sqrt(np.max(np.sum(x**2, axis=0)))
        x = np.vstack([x, np.full((1, n), c)])
    else:
        ud = basis.u2[:, :p]
        x = ud.T @ y
        proj = ud @ x
        u_mean = x.mean(axis=1, keepdims=True)
        x = x / np.maximum(np.sum(x * u_mean, axis=0, keepdims=True), 1e-12)
    indices = np.zeros(p, dtype=int)
    a = np.zeros((p, p))
    a[-1, 0] = 1
    for i in range(p):
        w = rng.standard_normal((p, 1))
        f = w - a @ np.linalg.pinv(a) @ w
        f /= np.linalg.norm(f)
        v = f.T @ x
        indices[i] = int(np.argmax(np.abs(v)))
        a[:, i] = x[:, indices[i]]
    return proj[:, indices].T.astype(np.float32)


def simplex_volume(endmembers: np.ndarray, pixels: np.ndarray,
                   basis: Basis | None = None) -> float:
    """Volume (up to a constant) of the simplex the endmembers span in the data's
    (p-1)-dimensional principal subspace."""
    basis = basis or Basis(np.asarray(pixels, dtype=np.float64).T)
    z = (np.asarray(endmembers, dtype=np.float64) - basis.mean[:, 0]) @ \
        basis.u[:, : len(endmembers) - 1]
    return float(abs(np.linalg.det(np.vstack([np.ones(len(endmembers)), z.T]))))


def vca_best(pixels: np.ndarray, p: int, seed: int = 0, restarts: int = 10,
             projection: str = "auto") -> np.ndarray:
    """VCA restarted with ``restarts`` seeds, keeping the endmembers of largest simplex
    volume (the N-FINDR criterion): VCA's random directions otherwise decide the result.
    Measured on Jasper Ridge over 20 seeds: mean SAD 18.9 deg for one run, 16.5 for the
    largest-volume set; Samson 4.4 and 3.8 deg."""
    basis = Basis(np.asarray(pixels, dtype=np.float64).T)
    runs = [vca(pixels, p, seed=seed * 1000 + k, projection=projection, basis=basis)
            for k in range(restarts)]
    return max(runs, key=lambda e: simplex_volume(e, pixels, basis))


def purify(pixels: np.ndarray, endmembers: np.ndarray, threshold: float = 0.85,
           iterations: int = 10, least: float = 0.01) -> np.ndarray:
    """Move each endmember to the typical spectrum of the pixels nearly pure in it.

    Vertex methods return the most extreme pixel of each material, which on a real scene is
    extreme partly because of noise and illumination; analysts' reference endmembers are
    typical pure spectra instead. Each iteration unmixes the pixels with SCLSU (a brightness
    per pixel, so that shade does not pass for another material) and replaces every endmember
    by the mean *direction* of the pixels whose abundance in it is at least ``threshold``
    (their unit-norm spectra averaged: a bright pixel does not outweigh a shaded one), at the
    members' mean brightness, so that the library stays in the scene's units. An endmember
    with fewer members than ``least`` of the pixels takes its ``least`` most abundant ones.

    A share of the purest pixels instead of a threshold (hsimap before issue 29, 5%) mixes
    materials in proportion to the share, whatever their purity: on Jasper Ridge it costs
    soil and road 8-11 deg at the 10-20% that tree and water need (docs/benchmarks.md). The
    threshold's own cost: up to 15% of other materials stay in each average, so where exact
    pure pixels exist among many mixtures (synthetic scenes) VCA's vertex is closer.

    Args:
        pixels: (n, bands).
        endmembers: (p, bands) starting spectra.
        threshold: abundance from which a pixel counts as pure.
        iterations: unmixing and averaging rounds.
        least: smallest share of the pixels averaged for an endmember.

    Returns:
        (p, bands) endmembers.
    """
    x = np.asarray(pixels, dtype=np.float64)
    norm = np.linalg.norm(x, axis=1)
    x, norm = x[norm > 0], norm[norm > 0]
    if len(x) < len(endmembers):   # nothing to average over (a scene of zeros and little else)
        return np.asarray(endmembers, dtype=np.float32)
    unit = unit_spectra(x)
    e = unit_spectra(np.asarray(endmembers, dtype=np.float64))
    brightness = np.linalg.norm(np.asarray(endmembers, dtype=np.float64), axis=1)
    keep = max(1, int(round(least * len(x))))
    for _ in range(iterations):
        a = sclsu(x, e)
        for k in range(len(e)):
            members = a[:, k] >= threshold
            if members.sum() < keep:
                members = np.argsort(a[:, k])[-keep:]
            e[k] = unit_spectra(unit[members].mean(axis=0))
            brightness[k] = norm[members].mean()
    return (e * brightness[:, None]).astype(np.float32)


def fcls(pixels: np.ndarray, endmembers: np.ndarray, delta: float = 1e3) -> np.ndarray:
    """Fully constrained least squares: abundances >= 0 summing to one, per pixel.

    The sum-to-one constraint is enforced by a heavily weighted extra row (Heinz & Chang), then
    each pixel is a non-negative least squares problem (scipy's NNLS).

    Args:
        pixels: (n, bands).
        endmembers: (p, bands).

    Returns:
        (n, p) abundances.
    """
    e = np.vstack([np.asarray(endmembers, dtype=np.float64).T,
                   delta * np.ones((1, endmembers.shape[0]))])
    out = np.empty((pixels.shape[0], endmembers.shape[0]))
    for i, y in enumerate(np.asarray(pixels, dtype=np.float64)):
        out[i], _ = nnls(e, np.append(y, delta))
    s = out.sum(axis=1, keepdims=True)
    return out / np.where(s > 0, s, 1.0)


def unit_spectra(spectra: np.ndarray) -> np.ndarray:
    """Spectra scaled to unit Euclidean norm along the last axis (all-zero ones kept)."""
    s = np.asarray(spectra, dtype=np.float64)
    n = np.linalg.norm(s, axis=-1, keepdims=True)
    return s / np.where(n > 0, n, 1.0)


def sclsu(pixels: np.ndarray, endmembers: np.ndarray) -> np.ndarray:
    """Scaled constrained least squares (SCLSU): each pixel a non-negative mixture of the
    endmembers with a brightness of its own, x = s (a_1 u_1 + ... + a_p u_p), a >= 0 summing
    to one, s > 0, where u_k is endmember k at unit norm.

    Illumination, slope and shade scale a pixel's whole spectrum; FCLS, which has no s, must
    mimic a darker pixel by mixing in the darkest endmember (water, shade). The least squares
    fit with a free s is the non-negative least squares fit of c = s a, so this is scipy's
    NNLS per pixel, its coefficients then divided by their sum (s). With a free brightness the
    abundances depend on the endmembers' scale; at unit norm a_k is material k's share of the
    pixel's spectral magnitude, the same whatever scale a library comes in (measured: the
    reference maps of Jasper Ridge are reproduced from its reference spectra to RMSE 0.036 at
    unit norm, 0.050 at their stored scale; Samson's to 0.014 and 0.002). A pixel that no
    non-negative mixture approaches (all coefficients 0) gets FCLS's abundances.

    Args:
        pixels: (n, bands).
        endmembers: (p, bands), any positive scale.

    Returns:
        (n, p) abundances.
    """
    e = unit_spectra(endmembers).T
    x = np.asarray(pixels, dtype=np.float64)
    out = np.empty((x.shape[0], e.shape[1]))
    for i, y in enumerate(x):
        out[i], _ = nnls(e, y)
    s = out.sum(axis=1)
    none = s <= 0
    out[~none] /= s[~none, None]
    if none.any():
        out[none] = fcls(x[none], endmembers)
    return out


SOLVERS = {"sclsu": sclsu, "fcls": fcls}


def mixture(abundances: np.ndarray, endmembers: np.ndarray, solver: str) -> np.ndarray:
    """(n, bands): the spectra that ``solver``'s abundances (n, p) describe, up to SCLSU's
    per-pixel brightness (its endmembers enter at unit norm)."""
    e = unit_spectra(endmembers) if solver == "sclsu" else np.asarray(endmembers, np.float64)
    return np.asarray(abundances, np.float64) @ e


def spectral_angle(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle in radians between spectra along the last axis."""
    num = np.sum(a * b, axis=-1)
    den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return np.arccos(np.clip(num / np.maximum(den, 1e-12), -1.0, 1.0))


def match_endmembers(estimated: np.ndarray, reference: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Hungarian assignment on spectral angle: for each reference endmember, the index of the
    estimated one matched to it, and their angle in degrees."""
    from scipy.optimize import linear_sum_assignment

    sad = np.degrees(spectral_angle(estimated[:, None, :], reference[None, :, :]))
    rows, cols = linear_sum_assignment(sad)
    order = rows[np.argsort(cols)]
    return order, sad[order, np.arange(len(reference))]
