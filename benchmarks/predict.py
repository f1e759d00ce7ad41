"""Streaming prediction: throughput, peak memory, pipeline overhead; and the whole-image way.

For each scene size: a synthetic scene is written, then in fresh processes
(1) ``write_outputs`` end to end (read, window forward, stitch, write GeoTIFFs, library,
quicklooks) with 1 and with N workers: px/s and peak RSS;
(2) the bare window forward passes over the same tiles, on windows already in memory:
overhead = (1) with 1 worker / (2);
(3) the reference approach, one forward pass over the whole image: time and peak RSS, or where
it fails.

    python benchmarks/predict.py --sizes 256 512 1024 2048
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import stamp, table  # noqa: E402

CHILD = r"""
import json, resource, sys, time
import numpy as np, torch
from hsimap.io.scene import open_scene, read_window
from hsimap.model.store import load_model
mode, scene_path, model_dir, out, workers = sys.argv[1:6]
scene, model = open_scene(scene_path), load_model(model_dir)
t = time.perf_counter()
if mode == "stream":
    from hsimap.outputs import write_outputs
    write_outputs(scene, model, out, progress=False, workers=int(workers))
elif mode == "bare":
    from hsimap.inference import window_products
    from hsimap.windows import tiles
    torch.set_num_threads(1)
    wins = [(t_, *read_window(scene, t_.rows, t_.cols)) for t_ in
            tiles(scene.sizes["y"], scene.sizes["x"], model.window, model.halo)]
    t = time.perf_counter()
    for t_, v, m in wins:
        window_products(model, v, m, (t_.row, t_.col))
elif mode == "whole":
    from hsimap.inference import window_products
    v, m = read_window(scene, slice(None), slice(None))
    window_products(model, v, m, (0, 0))
secs = time.perf_counter() - t
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": secs, "rss_mb": rss}))
"""


def child(mode, scene, model_dir, out, workers, timeout):
    try:
        r = subprocess.run([sys.executable, "-c", CHILD, mode, str(scene), str(model_dir),
                            str(out), str(workers)], capture_output=True, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"over {timeout} s"}
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["killed"])[-1]
        return {"error": f"exit {r.returncode}: {last[:60]}"}
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    ap.add_argument("--bands", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--whole-timeout", type=int, default=600)
    args = ap.parse_args(argv)
    from hsimap.io.scene import open_scene
    from hsimap.labels import load_labels
    from hsimap.synth import SynthSpec, make_scene
    from hsimap.train import TrainOptions, train

    rows = []
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        base = make_scene(d / "train.tif", SynthSpec(width=128, height=128, bands=args.bands))
        scene = open_scene(base.scene)
        labels, tbl = load_labels(base.labels, scene)
        train(scene, labels, tbl, d / "model",
              TrainOptions(epochs=3, hidden=args.hidden, progress=False))
        for side in args.sizes:
            made = make_scene(d / f"s{side}.tif",
                              SynthSpec(width=side, height=side, bands=args.bands, seed=1))
            px = side * side
            one = child("stream", made.scene, d / "model", d / f"o1_{side}", 1, 7200)
            many = child("stream", made.scene, d / "model", d / f"on_{side}", args.workers,
                         7200)
            bare = child("bare", made.scene, d / "model", "-", 1, 7200)
            whole = child("whole", made.scene, d / "model", "-", 1, args.whole_timeout)

            def rate(r, px=px):
                return f"{px / r['seconds']:,.0f}" if "seconds" in r else r["error"]

            def mem(r):
                return f"{r['rss_mb']:,.0f}" if "rss_mb" in r else "-"

            over = (f"{one['seconds'] / bare['seconds']:.2f}"
                    if "seconds" in one and "seconds" in bare else "-")
            rows.append([f"{side} x {side} ({px / 1e6:.2f} Mpx)", rate(one), mem(one),
                         rate(many), mem(many), over, rate(whole), mem(whole)])
            print(rows[-1], file=sys.stderr, flush=True)
    print(table(["scene", "px/s, 1 worker", "peak RSS MiB", f"px/s, {args.workers} workers",
                 "peak RSS MiB", "overhead (end-to-end / bare forward)",
                 "whole image: px/s", "whole image: peak RSS MiB"], rows))
    print(f"\n{args.bands} bands, model hidden {args.hidden}, window 128, halo 16. "
          + stamp("python benchmarks/predict.py " + " ".join(argv or sys.argv[1:])))


if __name__ == "__main__":
    main()
