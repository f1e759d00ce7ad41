"""Unmixing quality on real benchmarks with reference endmembers and abundances.

Jasper Ridge (100 x 100 px, 198 bands, 4 endmembers) and Samson (95 x 95 px, 156 bands,
3 endmembers), from ../shared/data. Estimated endmembers are matched to the reference by the
Hungarian assignment on spectral angle; reported: mean SAD (degrees) over endmembers, abundance
RMSE against the reference maps, reconstruction RMSE (scene units), mean +- std over seeds.
Methods (each ``hsimap.unmix.unmix``): ``hsimap`` (the unmixing network started from the purified
extraction refines the endmembers, SCLSU solves the abundances: the default of ``hsimap unmix``);
``hsimap-network`` (the same, abundances from the network's encoder); ``vca-fcls``
(textbook VCA + FCLS);
``vca-affine-fcls`` (VCA forced onto its affine projection + FCLS, the variant behind the
8.6 deg Jasper Ridge figure in issue 6); ``purified-fcls`` (hsimap's extraction + FCLS, no
network: separates what the extraction and the network each contribute); ``purified-sclsu``
(the same with SCLSU, a free brightness per pixel). Reconstruction RMSE is given as the
abundances mix the endmembers, and with each pixel's least-squares brightness (SCLSU's model).

    python benchmarks/unmixing.py --seeds 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from scipy.io import loadmat

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHARED, mean_std, stamp, table  # noqa: E402

from hsimap.io.scene import open_scene  # noqa: E402
from hsimap.model.vca import match_endmembers, mixture  # noqa: E402
from hsimap.workflows.unmix import unmix  # noqa: E402


def load(name: str):
    """Scene path, reference endmembers (P, bands) and abundances (P, h, w)."""
    if name == "jasper":
        ref = loadmat(SHARED / "jasper_ridge" / "JasperRidge2_end4.mat")
        scene = SHARED / "jasper_ridge" / "JasperRidge2_R198.mat"
        # Zhu's matrices list pixels column-major, like the cube (see PROVENANCE.md).
        return scene, ref["M"].T, ref["A"].reshape(4, 100, 100, order="F")
    if name == "samson":
        ref = loadmat(SHARED / "samson" / "Samson_with_GT.mat")
        return (SHARED / "samson" / "samson_1.mat", ref["GT"],
                np.moveaxis(ref["S_GT"], 2, 0))
    raise ValueError(name)


def with_brightness(x: np.ndarray, recon: np.ndarray, axis: int) -> np.ndarray:
    """``recon`` scaled per pixel by its least-squares brightness <x, r> / <r, r> (SCLSU's
    model gives each pixel a brightness of its own); ``axis`` is the band axis."""
    dot = (x * recon).sum(axis, keepdims=True)
    return recon * dot / np.maximum((recon * recon).sum(axis, keepdims=True), 1e-30)


def score(scene_path, ref_e, ref_a, result) -> dict:
    with rasterio.open(result.paths["abundances"]) as src:
        a = src.read()
        solver = src.tags().get("HSIMAP_SOLVER", "fcls")
    order, sad = match_endmembers(result.endmembers, ref_e)
    a = a[order]
    x = open_scene(scene_path).values.astype(np.float64)
    b, h, w = x.shape
    # "network" abundances mix the endmembers as they are, like FCLS's.
    recon = mixture(a.reshape(len(a), -1).T, result.endmembers[order],
                    solver).T.reshape(b, h, w)
    return {"sad": float(sad.mean()), "sad_each": sad.tolist(),
            "armse": float(np.sqrt(np.mean((a - ref_a) ** 2))),
            # SCLSU's mixture has no scale until each pixel's brightness is applied.
            "rrmse": float(np.sqrt(np.mean((x - recon) ** 2))) if solver != "sclsu" else np.nan,
            "srmse": float(np.sqrt(np.mean((x - with_brightness(x, recon, 0)) ** 2)))}


METHODS = {"hsimap": {"method": "hsimap"},
           "hsimap-network": {"method": "hsimap", "solver": "network"},
           "vca-fcls": {"method": "vca-fcls", "extraction": "vca"},
           "vca-affine-fcls": {"method": "vca-fcls", "extraction": "vca-affine"},
           "purified-fcls": {"method": "vca-fcls", "extraction": "purified"},
           "purified-sclsu": {"method": "vca-fcls", "extraction": "purified", "solver": "sclsu"}}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--scenes", nargs="+", default=["jasper", "samson"])
    ap.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    args = ap.parse_args(argv)
    rows = []
    for name in args.scenes:
        scene_path, ref_e, ref_a = load(name)
        p = len(ref_e)
        for method in args.methods:
            runs, secs = [], []
            for seed in args.seeds:
                with tempfile.TemporaryDirectory() as d:
                    t = time.perf_counter()
                    res = unmix(open_scene(scene_path), d, endmembers=p, epochs=args.epochs,
                                seed=seed, progress=False, **METHODS[method])
                    secs.append(time.perf_counter() - t)
                    runs.append(score(scene_path, ref_e, ref_a, res))
            each = np.array([r["sad_each"] for r in runs]).mean(0)
            rows.append([name, method, mean_std([r["sad"] for r in runs], "{:.2f}"),
                         mean_std([np.radians(r["sad"]) for r in runs], "{:.4f}"),
                         " / ".join(f"{v:.1f}" for v in each),
                         mean_std([r["armse"] for r in runs]),
                         "-" if np.isnan(runs[0]["rrmse"])
                         else mean_std([r["rrmse"] for r in runs], "{:.4g}"),
                         mean_std([r["srmse"] for r in runs], "{:.4g}"),
                         f"{np.mean(secs):.1f}"])
            print(f"{name} {method}: {rows[-1]}", file=sys.stderr, flush=True)
    print(table(["scene", "method", "mean SAD (deg)", "mean SAD (rad)",
                 "SAD per endmember (deg)", "abundance RMSE", "reconstruction RMSE",
                 "same, free brightness", "seconds/run"], rows))
    print(f"\nSeeds {args.seeds}; epochs {args.epochs}. "
          + stamp("python benchmarks/unmixing.py " + " ".join(argv or sys.argv[1:])))


if __name__ == "__main__":
    main()
