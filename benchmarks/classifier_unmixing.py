"""Unmixing inside the classifier: how good are the abundances ``hsimap predict`` writes?

Synthetic scenes (``hsimap synth``: real USGS spectra mixed with smooth abundance fields,
per-pixel variability, 40 dB SNR) have known endmembers and abundances. For each seed a scene is
made, a classifier is trained with the paper's protocol (30 training and 10 validation pixels
per class, the rest test) and P set to the true number of endmembers, and the whole scene is
predicted. Its mean endmembers and abundances are scored like ``benchmarks/unmixing.py``
(Hungarian matching on spectral angle): mean SAD (deg), abundance RMSE, with test OA for
context, against ``hsimap unmix`` and VCA + FCLS on the same scene.

    python benchmarks/classifier_unmixing.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import mean_std, stamp, table  # noqa: E402

from hsimap.inference import predict  # noqa: E402
from hsimap.io.labels import load_labels  # noqa: E402
from hsimap.io.scene import open_scene  # noqa: E402
from hsimap.model.store import load_model  # noqa: E402
from hsimap.model.vca import match_endmembers  # noqa: E402
from hsimap.synth import SynthSpec, make_scene  # noqa: E402
from hsimap.workflows.train import TrainOptions, train  # noqa: E402
from hsimap.workflows.unmix import unmix  # noqa: E402


def score(endmembers: np.ndarray, abundances: np.ndarray, true_e: np.ndarray,
          true_a: np.ndarray) -> tuple[float, float]:
    """Mean SAD (deg) and abundance RMSE after Hungarian matching on spectral angle."""
    order, sad = match_endmembers(endmembers, true_e)
    return float(sad.mean()), float(np.sqrt(np.mean((abundances[order] - true_a) ** 2)))


def run_seed(seed: int, args, work: Path) -> dict[str, tuple]:
    spec = SynthSpec(width=args.size, height=args.size, bands=args.bands,
                     endmembers=args.endmembers, classes=args.classes, seed=seed)
    made = make_scene(work / "scene.tif", spec)
    scene = open_scene(made.scene)
    with rasterio.open(made.abundances) as src:
        truth = src.read()
    out: dict[str, tuple] = {}

    t = time.perf_counter()
    labels, classes = load_labels(made.labels, scene)
    result = train(scene, labels, classes, work / "model",
                   TrainOptions(steps=args.epochs, endmembers=args.endmembers,
                                hidden=args.hidden, window=args.window, halo=args.halo,
                                seed=seed, progress=False))
    model = load_model(work / "model")
    ds = predict(scene, model).compute(scheduler="threads")
    spectra, _ = model.endmember_spectra()
    oa = result.test_metrics.overall_accuracy if result.test_metrics else float("nan")
    out["hsimap predict"] = (*score(spectra, ds.abundances.values, made.endmembers, truth), oa,
                             time.perf_counter() - t)

    for name, kw in (("hsimap unmix", {"method": "hsimap", "epochs": args.unmix_epochs}),
                     ("vca-fcls", {"method": "vca-fcls"})):
        t = time.perf_counter()
        res = unmix(scene, work / name, endmembers=args.endmembers, window=args.window,
                    halo=args.halo, seed=seed, progress=False, **kw)
        with rasterio.open(res.paths["abundances"]) as src:
            a = src.read()
        out[name] = (*score(res.endmembers, a, made.endmembers, truth), float("nan"),
                     time.perf_counter() - t)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--bands", type=int, default=64)
    ap.add_argument("--endmembers", type=int, default=5)
    ap.add_argument("--classes", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=200, help="classifier epochs")
    ap.add_argument("--unmix-epochs", type=int, default=300)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--window", type=int, default=128)
    ap.add_argument("--halo", type=int, default=16)
    args = ap.parse_args(argv)
    runs: dict[str, list[tuple]] = {}
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as d:
            for name, row in run_seed(seed, args, Path(d)).items():
                runs.setdefault(name, []).append(row)
                print(f"seed {seed} {name}: {row}", file=sys.stderr, flush=True)
    rows = []
    for name, rs in runs.items():
        r = np.array(rs)
        oa = mean_std(r[:, 2]) if np.isfinite(r[:, 2]).all() else "-"
        rows.append([name, mean_std(r[:, 0], "{:.2f}"), mean_std(r[:, 1]), oa,
                     f"{r[:, 3].mean():.1f}"])
    print(table(["method", "mean SAD (deg)", "abundance RMSE", "test OA", "seconds/run"], rows))
    print(f"\nSynthetic {args.size} x {args.size} px, {args.bands} bands, {args.endmembers} "
          f"endmembers, {args.classes} classes; seeds {args.seeds}; classifier {args.epochs} "
          f"epochs (hidden {args.hidden}), unmix {args.unmix_epochs} epochs. "
          + stamp("python benchmarks/classifier_unmixing.py "
                  + " ".join(argv or sys.argv[1:])))


if __name__ == "__main__":
    main()
