"""A batch of flight lines on a local dask cluster, and the same on an existing cluster.

    python examples/batch_cluster.py -o batch-output            # LocalCluster, 2 workers
    python examples/batch_cluster.py --scheduler tcp://host:8786  # your cluster

The shell equivalent: `hsimap batch "lines/*.tif" -m model/ -o maps/ --jobs 2`.
On an existing cluster every worker must see the scene, model and output paths (a shared
filesystem), and have hsimap installed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hsimap import SynthSpec, TrainOptions, load_labels, make_scene, open_scene, run_batch, train


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-o", "--output", default="batch-output")
    ap.add_argument("--lines", type=int, default=4)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--scheduler", default=None)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    out = Path(args.output).resolve()
    (out / "lines").mkdir(parents=True, exist_ok=True)
    lines = [make_scene(out / "lines" / f"line{i:02d}.tif",
                        SynthSpec(width=args.size, height=args.size, bands=32, seed=i),
                        overwrite=True) for i in range(args.lines)]
    scene = open_scene(lines[0].scene)
    labels, table = load_labels(lines[0].labels, scene)
    train(scene, labels, table, out / "model",
          TrainOptions(steps=args.steps, hidden=32, window=64, halo=8))
    summary = run_batch([m.scene for m in lines], out / "model", out / "maps",
                        jobs=args.workers, scheduler=args.scheduler)
    print(f"{len(summary.records)} done, {len(summary.failed)} failed, "
          f"{len(summary.skipped)} skipped, {summary.pixels / summary.seconds:,.0f} px/s")
    again = run_batch([m.scene for m in lines], out / "model", out / "maps",
                      jobs=args.workers, scheduler=args.scheduler, progress=False)
    print(f"rerun: {len(again.skipped)} skipped (already done)")


if __name__ == "__main__":
    main()
