"""Predict end to end, this tree against another revision, side by side on one machine.

A git worktree of ``--ref`` is made beside this tree. The model is trained by the reference's
code (a model folder both revisions load), the scene written once. Then, for ``--rounds``
rounds, each variant (the reference; this tree at each ``--precisions``) runs
``write_outputs`` (read, forward, stitch, write GeoTIFFs, library, quicklooks) in a fresh
process, in turn, so that a machine's drift hits every variant alike. A warm-up window first
(numba compiles its kernels on first use; that is not the pipeline's time). Reported: the
median px/s, its ratio to the reference, peak RSS, and the class map's agreement with the
reference's.

``--profile`` adds where one window's forward goes in this tree (torch.profiler, 1 thread,
self time by operator; the numba kernels appear as ``hsimap::`` ranges).

    python benchmarks/predict_vs.py --ref b20f771 --size 512 --bands 200 --rounds 3 --profile
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, stamp, table  # noqa: E402

TRAIN = r"""
import sys
from hsimap.io.labels import load_labels
from hsimap.io.scene import open_scene
from hsimap.workflows.train import TrainOptions, train
scene_path, labels_path, out, hidden = sys.argv[1:5]
scene = open_scene(scene_path)
labels, tbl = load_labels(labels_path, scene)
train(scene, labels, tbl, out, TrainOptions(steps=3, hidden=int(hidden), progress=False))
"""

RUN = r"""
import json, sys, time
from hsimap.io.scene import open_scene, read_window
from hsimap.model.store import load_model
from hsimap.inference import window_products
from hsimap.windows import tiles
from hsimap.workflows.predict import write_outputs
scene_path, model_dir, out, workers, precision = sys.argv[1:6]
scene, model = open_scene(scene_path), load_model(model_dir)
kw = {} if precision == "-" else {"precision": precision}
if kw:
    model.use_precision(precision)
first = tiles(scene.sizes["y"], scene.sizes["x"], model.window, model.halo)[0]
window_products(model, *read_window(scene, first.rows, first.cols), (0, 0))  # numba compiles


def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024


open("/proc/self/clear_refs", "w").write("5")
t = time.perf_counter()
write_outputs(scene, model, out, progress=False, workers=int(workers), quicklooks=True, **kw)
print(json.dumps({"seconds": time.perf_counter() - t, "rss_mb": status("VmHWM")}))
"""

PROFILE = r"""
import sys, torch
from hsimap.io.scene import open_scene, read_window
from hsimap.model.store import load_model
from hsimap.inference import window_products
from hsimap.windows import tiles
scene_path, model_dir, precision = sys.argv[1:4]
torch.set_num_threads(1)
scene, model = open_scene(scene_path), load_model(model_dir, precision=precision)
t = max(tiles(scene.sizes["y"], scene.sizes["x"], model.window, model.halo),
        key=lambda t: (t.height * t.width, -t.row, -t.col))  # a full window
args = (*read_window(scene, t.rows, t.cols), (t.row, t.col))
window_products(model, *args)
with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as p:
    window_products(model, *args)
rows = [(e.key, e.self_cpu_time_total) for e in p.key_averages()]
ranges = {k: v for k, v in rows if k.startswith("hsimap::")}
# A range's self time excludes the torch ops inside it, which the kernels do not call.
print(__import__("json").dumps({"rows": rows, "ranges": ranges}))
"""


def child(code: str, args: list[str], tree: Path, timeout: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree))
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                       timeout=timeout, env=env, cwd=tree)
    if r.returncode != 0:
        raise SystemExit(f"{tree}: {r.stderr.strip().splitlines()[-1:]}")
    lines = r.stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines else {}


def agreement(a: Path, b: Path) -> float:
    import rasterio

    with rasterio.open(a) as x, rasterio.open(b) as y:
        p, q = x.read(1), y.read(1)
    data = (p != 0) | (q != 0)
    return float((p == q)[data].mean())


def profile_table(result: dict) -> str:
    rows = sorted(result["rows"], key=lambda r: -r[1])
    total = sum(v for _, v in rows)
    groups: dict[str, float] = {}
    for key, v in rows:
        if key.startswith("hsimap::"):
            name = f"numba {key[8:]}"
        elif key in ("aten::mm", "aten::bmm", "aten::addmm", "aten::mkldnn_convolution",
                     "aten::_slow_conv2d_forward", "aten::linear", "aten::matmul"):
            name = "convolutions and matrix products"
        elif key in ("aten::copy_", "aten::_to_copy", "aten::to", "aten::contiguous",
                     "aten::clone"):
            name = "copies and casts"
        elif key in ("aten::index", "aten::index_add", "aten::index_copy", "aten::sort",
                     "aten::nonzero", "aten::cat", "aten::index_put_", "aten::scatter_add_",
                     "aten::gather"):
            name = "token selection and gathers"
        else:
            name = "other element-wise and bookkeeping"
        groups[name] = groups.get(name, 0.0) + v
    out = [[k, f"{v / 1e3:.1f}", f"{100 * v / total:.0f}%"]
           for k, v in sorted(groups.items(), key=lambda kv: -kv[1])]
    out.append(["total (self time)", f"{total / 1e3:.1f}", "100%"])
    return table(["part", "ms per window", "share"], out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref", default="b20f771")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--bands", type=int, default=200)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--timeout", type=int, default=3600)
    args = ap.parse_args(argv)
    from hsimap.synth import SynthSpec, make_scene

    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        ref = d / "ref"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(ref),
                        args.ref], check=True, capture_output=True)
        try:
            base = make_scene(d / "train.tif", SynthSpec(width=128, height=128,
                                                         bands=args.bands))
            child(TRAIN, [str(base.scene), str(base.labels), str(d / "model"),
                          str(args.hidden)], ref, args.timeout)
            made = make_scene(d / "scene.tif", SynthSpec(width=args.size, height=args.size,
                                                         bands=args.bands, seed=1))
            variants = [("ref", ref, "-")] + [(p, ROOT, p) for p in args.precisions]
            runs: dict[str, list[dict]] = {v[0]: [] for v in variants}
            for k in range(args.rounds):
                for name, tree, precision in variants:
                    out = d / f"out-{name}-{k}"
                    r = child(RUN, [str(made.scene), str(d / "model"), str(out),
                                    str(args.workers), precision], tree, args.timeout)
                    r["classes"] = out / "scene_classes.tif"
                    runs[name].append(r)
                    print(name, k, f"{r['seconds']:.2f} s", file=sys.stderr, flush=True)
            px = args.size ** 2
            ref_rate = px / statistics.median(r["seconds"] for r in runs["ref"])
            rows = []
            for name, _, _ in variants:
                rate = px / statistics.median(r["seconds"] for r in runs[name])
                same = agreement(runs[name][0]["classes"], runs["ref"][0]["classes"])
                label = f"{args.ref} (reference)" if name == "ref" else f"this tree, {name}"
                rows.append([label, f"{rate:,.0f}", f"{rate / ref_rate:.2f}x",
                             f"{max(r['rss_mb'] for r in runs[name]):,.0f}",
                             f"{100 * same:.2f}%"])
            print(table(["variant", f"px/s (median of {args.rounds})", "vs reference",
                         "peak RSS MiB", "class map = reference's"], rows))
            if args.profile:
                for p in args.precisions:
                    print(f"\nOne window's forward in this tree, {p}, 1 thread:\n")
                    print(profile_table(child(PROFILE, [str(made.scene), str(d / "model"), p],
                                              ROOT, args.timeout)))
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(ref)],
                           capture_output=True)
    print(f"\n{args.size} x {args.size} x {args.bands} float32, model hidden {args.hidden}, "
          f"{args.workers} workers. " + stamp("python benchmarks/predict_vs.py "
                                              + " ".join(argv or sys.argv[1:])))


if __name__ == "__main__":
    main()
