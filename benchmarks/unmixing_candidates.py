"""Issue 29's candidates for better endmembers and abundances, without the network.

Each row starts from hsimap's extractions (seed 0; they are deterministic for a seed) on Jasper
Ridge and Samson and changes one thing; scored as benchmarks/unmixing.py scores (Hungarian
matching on spectral angle, abundance RMSE against the reference maps, reconstruction RMSE in
the scene's units). Candidates:

- abundance solvers: FCLS (sum to one) and SCLSU (a free brightness per pixel), also with the
  reference endmembers, which says what the reference abundances are;
- endmembers beyond the pixels: alternating least squares (FCLS abundances, then the
  endmembers that best reconstruct the pixels with them), 1-30 rounds;
- purification: before this issue, the plain mean of a fraction of the purest pixels by FCLS
  (hsimap used 5%) or of every pixel above an FCLS abundance threshold; hsimap's purification
  now (SCLSU, the pixels' directions averaged above a threshold) over its threshold and rounds;
- spatial priors on the abundances: a Gaussian filter of FCLS's maps, and FCLS on a smoothed
  cube.

    python benchmarks/unmixing_candidates.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.optimize import nnls

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import stamp, table  # noqa: E402
from unmixing import load, with_brightness  # noqa: E402

from hsimap.io.scene import open_scene  # noqa: E402
from hsimap.model.vca import fcls, match_endmembers, mixture, purify, sclsu  # noqa: E402
from hsimap.workflows.unmix import unmix  # noqa: E402


def _extracted(scene, p: int, extraction: str) -> np.ndarray:
    with tempfile.TemporaryDirectory() as d:
        r = unmix(scene, d, method="vca-fcls", extraction=extraction, endmembers=p, seed=0,
                  progress=False)
    return r.endmembers.astype(np.float64)


def _row(scene: str, what: str, e: np.ndarray, a: np.ndarray, solver: str, x: np.ndarray,
         ref_e, ref_a, shape, same_scale: bool = True) -> list[str]:
    """a: (n, p) abundances in e's order, from ``solver``. SCLSU's are reconstructed with
    each pixel's least-squares brightness (its model), the others as the abundances mix the
    endmembers. The reference spectra are on another scale than the cubes (0-1 against Jasper
    Ridge's reflectance x 10,000), so their row has no reconstruction error."""
    order, sad = match_endmembers(e, ref_e)
    maps = a[:, order].T.reshape(len(e), *shape)
    r = mixture(a, e, solver)
    if solver == "sclsu":
        r = with_brightness(x, r, 1)
    return [scene, what, f"{sad.mean():.2f}", " / ".join(f"{s:.1f}" for s in sad),
            f"{np.sqrt(np.mean((maps - ref_a) ** 2)):.3f}",
            f"{np.sqrt(np.mean((x - r) ** 2)):.4g}" if same_scale else "-"]


def _share_purify(x: np.ndarray, e: np.ndarray, top: float, tau: float | None = None,
                  iterations: int = 5) -> np.ndarray:
    """hsimap's purification before this issue, with its variants: FCLS abundances, then each
    endmember the plain mean of its top ``top`` share of pixels (or, with ``tau``, of every
    pixel at abundance >= tau, the top share where fewer)."""
    e, keep = e.copy(), max(1, int(round(top * len(x))))
    for _ in range(iterations):
        a = fcls(x, e)
        for k in range(len(e)):
            sel = a[:, k] >= tau if tau is not None else np.zeros(len(x), bool)
            e[k] = x[sel].mean(0) if sel.sum() >= keep else x[np.argsort(a[:, k])[-keep:]].mean(0)
    return e


def candidates(name: str) -> list[list[str]]:
    path, ref_e, ref_a = load(name)
    scene = open_scene(path)
    cube = scene.values.astype(np.float64)
    b, h, w = cube.shape
    x, p, rows = cube.reshape(b, -1).T, len(ref_e), []
    row = lambda what, e, a, solver, same=True: rows.append(  # noqa: E731
        _row(name, what, e, a, solver, x, ref_e, ref_a, (h, w), same))
    e0 = _extracted(scene, p, "purified")
    row("purified + FCLS (hsimap's extraction)", e0, fcls(x, e0), "fcls")
    row("purified + SCLSU", e0, sclsu(x, e0), "sclsu")
    row("reference endmembers + SCLSU", ref_e, sclsu(x, ref_e), "sclsu", False)
    ref = np.array([nnls(ref_e.T, xi)[0] for xi in x])
    row("reference endmembers at their stored scale + NNLS, normalised", ref_e,
        ref / np.maximum(ref.sum(1, keepdims=True), 1e-12), "sclsu", False)
    e = e0.copy()
    for k in range(1, 31):
        e = np.maximum(np.linalg.lstsq(fcls(x, e), x, rcond=None)[0], 1e-6 * np.abs(x).max())
        if k in (1, 3, 10, 30):
            row(f"ALS endmembers, {k} rounds + FCLS", e, fcls(x, e), "fcls")
    affine = _extracted(scene, p, "vca-affine")
    for top in (0.01, 0.02, 0.05, 0.1, 0.2):
        ep = _share_purify(x, affine, top)
        row(f"previous purification, top {top:.0%} + FCLS", ep, fcls(x, ep), "fcls")
    for tau in (0.8, 0.9):
        ep = _share_purify(x, affine, 0.05, tau)
        row(f"previous purification, abundance >= {tau} + FCLS", ep, fcls(x, ep), "fcls")
    # hsimap's purification (SCLSU, directions averaged over abundance >= threshold): its
    # threshold and rounds, from the same start as the rows above.
    for tau, rounds in ((0.7, 10), (0.8, 10), (0.85, 5), (0.85, 10), (0.85, 20), (0.9, 10)):
        ep = purify(x, affine, threshold=tau, iterations=rounds).astype(np.float64)
        row(f"purify, abundance >= {tau}, {rounds} rounds + SCLSU", ep, sclsu(x, ep), "sclsu")
    a0 = fcls(x, e0)
    for sigma in (0.5, 1.0):
        maps = np.stack([gaussian_filter(m, sigma, mode="nearest")
                         for m in a0.T.reshape(p, h, w)])
        maps /= maps.sum(0, keepdims=True)
        row(f"FCLS maps smoothed (Gaussian {sigma} px)", e0, maps.reshape(p, -1).T, "fcls")
    smooth = np.stack([gaussian_filter(m, 1.0, mode="nearest") for m in cube]).reshape(b, -1).T
    row("FCLS of the cube smoothed (Gaussian 1 px)", e0, fcls(smooth, e0), "fcls")
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", nargs="+", default=["jasper", "samson"])
    args = ap.parse_args(argv)
    rows = [r for name in args.scenes for r in candidates(name)]
    print(table(["scene", "candidate", "mean SAD (deg)", "SAD per endmember (deg)",
                 "abundance RMSE", "reconstruction RMSE"], rows))
    print("\nSeed 0 (every candidate is deterministic for a seed). "
          + stamp("python benchmarks/unmixing_candidates.py " + " ".join(argv or sys.argv[1:])))


if __name__ == "__main__":
    main()
