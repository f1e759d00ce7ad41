"""Classification under the paper's protocol: hsimap, its ablations, SVM and random forest.

Per class 30 training and 10 validation pixels (5 training pixels for classes of 30 or fewer),
the rest test; the same split (``hsimap.io.labels.split_labels``, same seed) for every method.
Spectra scaled to [0, 1] with one global min and max. SVM: RBF, C and gamma tuned on the
validation pixels; RF: 500 trees, max_features tuned on the validation pixels.
Houston 2018 crop: labels brought to the 128 x 128 scene grid as the majority of each 4 x 4
block where at least 9 of the 16 sub-pixels agree.

    python benchmarks/classification.py --seeds 0 1 2 3 4 --steps 300
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.io import loadmat

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHARED, mean_std, peak_rss_mb, stamp, table  # noqa: E402

from hsimap.classes import ClassTable  # noqa: E402
from hsimap.io.labels import load_labels, split_labels  # noqa: E402
from hsimap.io.scene import open_scene  # noqa: E402
from hsimap.metrics import classification_metrics  # noqa: E402
from hsimap.workflows.train import TrainOptions, train  # noqa: E402


def houston_labels() -> np.ndarray:
    fine = loadmat(SHARED / "houston2018_subset" / "houston_dataset.mat")["clasLabs"]
    blocks = fine.reshape(128, 4, 128, 4).transpose(0, 2, 1, 3).reshape(128, 128, 16)
    out = np.zeros((128, 128), dtype=np.int32)
    for c in range(1, int(fine.max()) + 1):
        count = (blocks == c).sum(-1)
        out[count >= 9] = c
    return out


def load(name: str):
    if name == "salinas":
        scene = open_scene(SHARED / "salinasA" / "SalinasA_corrected.mat")
        labels, tbl = load_labels(SHARED / "salinasA" / "SalinasA_gt.mat", scene)
        return scene, labels, tbl
    if name == "houston":
        scene = open_scene(SHARED / "houston2018_subset" / "houston_dataset.mat",
                           variable="hyprImg")
        labels = houston_labels()
        ids = sorted(int(v) for v in np.unique(labels) if v)
        return scene, labels, ClassTable.default(ids)
    raise ValueError(name)


def baselines(scene, labels, ids, split, seed):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.svm import SVC

    x = scene.values.reshape(scene.sizes["band"], -1).T.astype(np.float64)
    x = (x - x.min()) / (x.max() - x.min())
    y = labels.ravel()
    tr, va, te = (split.ravel() == k for k in (1, 2, 3))
    out = {}
    best = None
    for c in (1, 10, 100, 1000, 10000):
        for g in (0.01, 0.1, 1, 10, 100):
            m = SVC(C=c, gamma=g).fit(x[tr], y[tr])
            acc = (m.predict(x[va]) == y[va]).mean()
            if best is None or acc > best[0]:
                best = (acc, m)
    out["SVM (RBF)"] = classification_metrics(y[te], best[1].predict(x[te]), ids)
    best = None
    for mf in ("sqrt", 0.3):
        m = RandomForestClassifier(500, max_features=mf, random_state=seed, n_jobs=2)
        m.fit(x[tr], y[tr])
        acc = (m.predict(x[va]) == y[va]).mean()
        if best is None or acc > best[0]:
            best = (acc, m)
    out["random forest"] = classification_metrics(y[te], best[1].predict(x[te]), ids)
    return out


VARIANTS = {"hsimap": {}, "hsimap --tokens raster": {"tokens": "raster"},
            "hsimap --no-unmixing": {"unmixing": False}}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", nargs="+", default=["salinas", "houston"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--ablation-seeds", type=int, nargs="*", default=None,
                    help="Seeds for the ablations (default: --seeds).")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS))
    ap.add_argument("--no-baselines", action="store_true",
                    help="Skip SVM and RF (their figures for these seeds are known).")
    args = ap.parse_args(argv)
    rows, per_class = [], []
    for name in args.scenes:
        scene, labels, tbl = load(name)
        results: dict[str, list] = {}
        timing: dict[str, list] = {}
        for seed in args.seeds:
            split = split_labels(labels, tbl.ids, seed=seed)
            if not args.no_baselines:
                for k, m in baselines(scene, labels, tbl.ids, split, seed).items():
                    results.setdefault(k, []).append(m)
            for variant in args.variants:
                seeds = args.seeds if variant == "hsimap" or args.ablation_seeds is None \
                    else args.ablation_seeds
                if seed not in seeds:
                    continue
                with tempfile.TemporaryDirectory() as d:
                    t = time.perf_counter()
                    r = train(scene, labels, tbl, d,
                              TrainOptions(steps=args.steps, seed=seed, progress=False,
                                           **VARIANTS[variant]))
                    results.setdefault(variant, []).append(r.test_metrics)
                    timing.setdefault(variant, []).append((r.seconds_per_step,
                                                           time.perf_counter() - t))
                print(f"{name} {variant} seed {seed}: OA {r.test_metrics.overall_accuracy:.4f}",
                      file=sys.stderr, flush=True)
        for method, ms in results.items():
            tm = timing.get(method)
            rows.append([name, method, str(len(ms)),
                         mean_std([m.overall_accuracy for m in ms], "{:.4f}"),
                         mean_std([m.average_accuracy for m in ms], "{:.4f}"),
                         mean_std([m.kappa for m in ms], "{:.4f}"),
                         f"{np.mean([t[0] for t in tm]):.2f}" if tm else "-",
                         f"{np.mean([t[1] for t in tm]):.0f}" if tm else "-"])
            per_class.append([name, method] + [
                mean_std([m.per_class_accuracy.get(c, np.nan) for m in ms], "{:.3f}")
                for c in tbl.ids])
    print(table(["scene", "method", "seeds", "test OA", "AA", "kappa", "s/step",
                 "s/run"], rows))
    print("\nPer-class test accuracy (classes in id order; scenes' class counts differ):\n")
    width = max(len(r) for r in per_class) - 2
    print(table(["scene", "method"] + [f"class {i + 1}" for i in range(width)],
                [r + [""] * (width + 2 - len(r)) for r in per_class]))
    print(f"\nSteps {args.steps}; peak RSS {peak_rss_mb():.0f} MiB. "
          + stamp("python benchmarks/classification.py " + " ".join(argv or sys.argv[1:])))


if __name__ == "__main__":
    main()
