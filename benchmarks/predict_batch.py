"""Windows per forward pass on the CPU: does batching pay there (it does on a GPU)?

One synthetic 200-band scene, one quickly trained default-shaped model (hidden 128, window 64);
``hsimap.predict`` computed with ``batch`` windows per dask task, on 1 and 2 worker threads
(one torch thread each, as ``hsimap predict`` runs). Pixels per second, each in one run.

    python benchmarks/predict_batch.py --side 512 --batches 1 2 4 8
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import stamp, table  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", type=int, default=512)
    ap.add_argument("--bands", type=int, default=200)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args(argv)

    import torch

    import hsimap
    from hsimap.io.labels import load_labels
    from hsimap.io.scene import open_scene
    from hsimap.model.store import load_model
    from hsimap.synth import SynthSpec, make_scene
    from hsimap.workflows.train import TrainOptions, train

    rows = []
    with tempfile.TemporaryDirectory() as d:
        base = make_scene(Path(d) / "train.tif", SynthSpec(width=128, height=128,
                                                           bands=args.bands))
        s = open_scene(base.scene)
        lab, tbl = load_labels(base.labels, s)
        train(s, lab, tbl, Path(d) / "m", TrainOptions(steps=3, progress=False))
        model = load_model(Path(d) / "m")
        made = make_scene(Path(d) / "big.tif", SynthSpec(width=args.side, height=args.side,
                                                         bands=args.bands, seed=1))
        scene = open_scene(made.scene)
        px = args.side * args.side
        torch.set_num_threads(1)
        for workers in args.workers:
            for batch in args.batches:
                ds = hsimap.predict(scene, model, batch=batch)
                t = time.perf_counter()
                ds.classes.compute(scheduler="threads", num_workers=workers)
                secs = time.perf_counter() - t
                rows.append([str(workers), str(batch), f"{px / secs:,.0f}"])
                print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
    print(table(["workers", "windows per forward", "px/s"], rows))
    print(f"\n{args.side} x {args.side} px, {args.bands} bands, window 64, halo 8. "
          + stamp("python benchmarks/predict_batch.py " + " ".join(argv or sys.argv[1:])))


if __name__ == "__main__":
    main()
