"""Window and halo at prediction time: throughput against accuracy and seams.

A window of W px with a halo of H keeps (W - 2H)^2 of its W^2 pixels: the rest is recomputed
overlap. Larger windows and thinner halos waste less, but the model was trained on chips of
its own window, and a thin halo gives the pixels near a core's edge less context.

(1) Throughput: a model trained on a synthetic scene (default options) predicts a synthetic
S x S scene end to end (``write_outputs``, 2 workers) for each (window, halo).
(2) Accuracy and seams: the default model trained on each real scene (seed 0) predicts it for
each (window, halo); test OA on the benchmark split, and the share of pixels whose class equals
the class of the model's own window and halo ("= default").

    python benchmarks/halo.py --windows 64 96 128 --halos 8 12 16 --size 1024
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from classification import load  # noqa: E402
from common import stamp, table  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows", type=int, nargs="+", default=[64, 96, 128])
    ap.add_argument("--halos", type=int, nargs="+", default=[8, 12, 16])
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--bands", type=int, default=200)
    ap.add_argument("--scenes", nargs="*", default=["houston", "salinas"])
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    from hsimap.inference import predict
    from hsimap.io.labels import load_labels, split_labels
    from hsimap.io.scene import open_scene
    from hsimap.synth import SynthSpec, make_scene
    from hsimap.workflows.predict import write_outputs
    from hsimap.workflows.train import TrainOptions, train

    combos = [(w, h) for w in args.windows for h in args.halos if 2 * h < w]
    speed_rows, acc_rows = [], []
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        base = make_scene(d / "train.tif", SynthSpec(width=128, height=128, bands=args.bands))
        scene = open_scene(base.scene)
        labels, tbl = load_labels(base.labels, scene)
        model = train(scene, labels, tbl, d / "model",
                      TrainOptions(steps=3, progress=False)).model
        big = open_scene(make_scene(d / "big.tif", SynthSpec(width=args.size, height=args.size,
                                                             bands=args.bands, seed=1)).scene)
        write_outputs(big, model, d / "warm", window=64, halo=8, progress=False,
                      workers=args.workers, quicklooks=False)   # numba compiles
        for w, h in combos:
            t = time.perf_counter()
            write_outputs(big, model, d / f"o{w}-{h}", window=w, halo=h, progress=False,
                          workers=args.workers, quicklooks=False)
            secs = time.perf_counter() - t
            kept = (w - 2 * h) ** 2 / w ** 2
            speed_rows.append([f"{w}", f"{h}", f"{100 * kept:.0f}%",
                               f"{args.size ** 2 / secs:,.0f}"])
            print(speed_rows[-1], file=sys.stderr, flush=True)
        for name in args.scenes:
            scene, labels, tbl = load(name, d)
            split = split_labels(labels, tbl.ids, seed=0)
            r = train(scene, labels, tbl, d / f"m-{name}",
                      TrainOptions(seed=0, progress=False), split=split)
            m = r.model
            test = split == 3
            own = np.asarray(predict(scene, m).classes)
            for w, h in combos:
                classes = np.asarray(predict(scene, m, window=w, halo=h).classes)
                oa = float((classes[test] == labels[test]).mean())
                same = float((classes == own)[own > 0].mean())
                acc_rows.append([name, f"{w}", f"{h}", f"{oa:.4f}", f"{100 * same:.2f}%"])
                print(acc_rows[-1], file=sys.stderr, flush=True)
    print(table(["window", "halo", "pixels kept", f"px/s ({args.workers} workers)"],
                speed_rows))
    print()
    print(table(["scene", "window", "halo", "test OA (seed 0)", "= default window's map"],
                acc_rows))
    print("\n" + stamp("python benchmarks/halo.py " + " ".join(argv or sys.argv[1:])))


if __name__ == "__main__":
    main()
