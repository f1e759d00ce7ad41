"""Batch throughput: 8 synthetic scenes with 1 and 2 dask workers, against the same scenes
predicted one after another (``hsimap predict`` each, in one process, all cores).

    python benchmarks/batch.py --scenes 8 --size 256
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import stamp, table  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=8)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--bands", type=int, default=48)
    ap.add_argument("--hidden", type=int, default=64)
    args = ap.parse_args(argv)
    from hsimap.engine import default_workers
    from hsimap.io.labels import load_labels
    from hsimap.io.scene import open_scene
    from hsimap.model.store import load_model
    from hsimap.synth import SynthSpec, make_scene
    from hsimap.workflows.batch import run_batch
    from hsimap.workflows.predict import write_outputs
    from hsimap.workflows.train import TrainOptions, train

    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        lines = [make_scene(d / f"line{i}.tif", SynthSpec(width=args.size, height=args.size,
                                                          bands=args.bands, seed=i)).scene
                 for i in range(args.scenes)]
        scene = open_scene(lines[0])
        labels, tbl = load_labels(d / "line0_labels.tif", scene)
        train(scene, labels, tbl, d / "model",
              TrainOptions(steps=3, hidden=args.hidden, progress=False))
        px = args.scenes * args.size**2
        model = load_model(d / "model")
        t = time.perf_counter()
        for s in lines:
            write_outputs(open_scene(s), model, d / "seq" / s.stem, progress=False)
        seq = time.perf_counter() - t
        rows = [["one `predict` after another", f"{default_workers()} threads",
                 f"{seq:.1f}", f"{px / seq:,.0f}", "1.00"]]
        for workers in (1, 2):
            t = time.perf_counter()
            summary = run_batch(lines, d / "model", d / f"batch{workers}", jobs=workers,
                                progress=False)
            secs = time.perf_counter() - t
            assert not summary.failed
            rows.append([f"`batch --jobs {workers}`", f"{workers} x 1 thread",
                         f"{secs:.1f}", f"{px / secs:,.0f}", f"{seq / secs:.2f}"])
        one, two = float(rows[1][2]), float(rows[2][2])
    print(table(["run", "parallelism", "seconds (cluster start included)", "px/s",
                 "speed vs sequential"], rows))
    print(f"\nScaling efficiency 1 -> 2 workers: {one / two / 2:.2f}. {args.scenes} scenes of "
          f"{args.size} x {args.size} px x {args.bands} bands, model hidden {args.hidden}. "
          + stamp("python benchmarks/batch.py " + " ".join(argv or sys.argv[1:])))


if __name__ == "__main__":
    main()
