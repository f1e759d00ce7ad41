"""Does ``hsimap suggest`` pay? Labels chosen by it against as many drawn at random.

Protocol, per scene and seed: half of each class's labelled pixels are the fixed test set,
the other half the pool an analyst could label. From the pool: 10 validation pixels per class
(fixed) and 10 training pixels per class to start. Then 4 rounds, each adding 5 x classes
pixels of the pool to the training set, and training again from scratch with the same
settings:

- ``suggest``: the points ``suggest`` picks from the last round's model (margin, spread over
  windows and predicted classes, pool pixels only), labelled with their truth;
- ``random``: 5 pixels per class drawn at random from the pool's unused pixels.

Prints test OA per round, mean +- std over seeds, for both.

    python benchmarks/active_learning.py --scenes salinas --seeds 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from classification import load  # noqa: E402
from common import stamp, table  # noqa: E402

from hsimap.classes import Split  # noqa: E402


def initial_split(labels: np.ndarray, ids: list[int], seed: int, start: int, val: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(split codes, pool mask): test half, validation and starting training pixels."""
    rng = np.random.default_rng(seed)
    split = np.zeros(labels.shape, np.uint8)
    pool = np.zeros(labels.shape, bool)
    for c in ids:
        where = rng.permutation(np.flatnonzero(labels.ravel() == c))
        half = len(where) // 2
        split.flat[where[half:]] = Split.TEST
        mine = where[:half]
        pool.flat[mine] = True
        split.flat[mine[:val]] = Split.VALIDATION
        split.flat[mine[val:val + start]] = Split.TRAIN
    return split, pool


def run(name: str, seeds: list[int], rounds: int, start: int, add: int, val: int,
        extra: dict) -> dict[str, np.ndarray]:
    from hsimap.workflows.suggest import SuggestOptions, suggest_pixels
    from hsimap.workflows.train import TrainOptions, train

    scene, labels, tbl = load(name)
    ids = list(tbl.ids)
    curves = {"suggest": np.zeros((len(seeds), rounds + 1)),
              "random": np.zeros((len(seeds), rounds + 1))}
    for si, seed in enumerate(seeds):
        split0, pool = initial_split(labels, ids, seed, start, val)
        opts = TrainOptions(seed=seed, progress=False, **extra)
        with tempfile.TemporaryDirectory() as d:
            first = train(scene, labels, tbl, Path(d) / "m0", opts, split=split0)
        oa0 = first.test_metrics.overall_accuracy
        for strategy in curves:
            split, model = split0.copy(), first.model
            curves[strategy][si, 0] = oa0
            rng = np.random.default_rng(seed + 1000)
            for k in range(1, rounds + 1):
                free = pool & (split == 0)
                if strategy == "suggest":
                    s = suggest_pixels(scene, SuggestOptions(n=add * len(ids), seed=seed),
                                       model=model, labels=(~free).astype(np.int32))
                    split[s.rows, s.cols] = Split.TRAIN
                else:
                    for c in ids:
                        where = np.flatnonzero((free & (labels == c)).ravel())
                        split.flat[rng.choice(where, min(add, len(where)), replace=False)] = \
                            Split.TRAIN
                with tempfile.TemporaryDirectory() as d:
                    res = train(scene, labels, tbl, Path(d) / "m", opts, split=split)
                model = res.model
                curves[strategy][si, k] = res.test_metrics.overall_accuracy
                print(f"{name} seed {seed} {strategy} round {k}: "
                      f"{int((split == Split.TRAIN).sum())} train px, "
                      f"OA {curves[strategy][si, k]:.4f}", file=sys.stderr, flush=True)
    return curves


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", nargs="+", default=["salinas", "houston"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--start", type=int, default=10, help="Training pixels per class to start.")
    ap.add_argument("--add", type=int, default=5, help="Pixels per class added each round.")
    ap.add_argument("--steps", type=int, default=None, help="Training steps (default: hsimap's).")
    args = ap.parse_args(argv)
    extra = {"steps": args.steps} if args.steps else {}
    rows = []
    for name in args.scenes:
        curves = run(name, args.seeds, args.rounds, args.start, args.add, 10, extra)
        for strategy, c in curves.items():
            rows.append([name, strategy] + [f"{m:.4f} +- {s:.4f}" for m, s in
                                            zip(c.mean(0), c.std(0), strict=True)])
        gain = curves["suggest"] - curves["random"]
        rows.append([name, "suggest - random"] + [f"{m:+.4f}" for m in gain.mean(0)])
    heads = ["scene", "labels by"] + [f"round {k}" for k in range(args.rounds + 1)]
    print(table(heads, rows))
    print("\n" + stamp("python benchmarks/active_learning.py " +
                       " ".join(argv or sys.argv[1:])))


if __name__ == "__main__":
    main()
