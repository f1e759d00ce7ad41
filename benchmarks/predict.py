"""Streaming prediction: throughput, pipeline overhead and peak memory, for each CPU scan.

For each scene size a synthetic scene is written, then, in fresh processes and for each scan
(``HSIMAP_SCAN``: ``fused``, hsimap's kernel, and ``pscan``, mambapy's parallel scan as hsimap
ran it before):
(1) ``write_outputs`` end to end (read, window forward, stitch, write GeoTIFFs, library,
quicklooks) with 1 and with N workers: px/s and peak RSS;
(2) the bare window forward passes over the same tiles (halos included), on windows already in
memory, one thread: overhead = (1) with 1 worker / (2).
Peak RSS is counted from the end of a warm-up window (numba compiles the scan on first use, and
that peak is not the pipeline's); RSS per window in flight = (peak RSS at N workers - RSS at
that point) / N.

``--memory-sizes`` adds an end-to-end run per size (N workers, fused scan only) for the
flat-memory check on large scenes. ``--cap-mib M --cap-size S`` runs one more end to end on an
S x S float32 scene inside a memory cgroup capped at M MiB (cgroup v2 or v1; needs root): the
scene's raw size should exceed the cap, and the run must complete.

    python benchmarks/predict.py --sizes 512 --bands 200 --memory-sizes 1024 2048
    python benchmarks/predict.py --sizes 64 --scans fused --cap-mib 1536 --cap-size 2048
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import stamp, table  # noqa: E402

CHILD = r"""
import json, sys, time
import numpy as np, torch
from hsimap.io.scene import open_scene, read_window
from hsimap.model.store import load_model
from hsimap.inference import window_products
from hsimap.windows import tiles
mode, scene_path, model_dir, out, workers = sys.argv[1:6]
scene, model = open_scene(scene_path), load_model(model_dir)
first = tiles(scene.sizes["y"], scene.sizes["x"], model.window, model.halo)[0]
window_products(model, *read_window(scene, first.rows, first.cols), (0, 0))  # numba, allocator


def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024


# Peak RSS from here on: the warm-up's compilation peak is not the pipeline's.
open("/proc/self/clear_refs", "w").write("5")
base = status("VmRSS")
t = time.perf_counter()
if mode == "stream":
    from hsimap.workflows.predict import write_outputs
    write_outputs(scene, model, out, progress=False, workers=int(workers))
elif mode == "bare":
    torch.set_num_threads(1)
    wins = [(t_, *read_window(scene, t_.rows, t_.cols)) for t_ in
            tiles(scene.sizes["y"], scene.sizes["x"], model.window, model.halo)]
    t = time.perf_counter()
    for t_, v, m in wins:
        window_products(model, v, m, (t_.row, t_.col))
secs = time.perf_counter() - t
print(json.dumps({"seconds": secs, "rss_mb": status("VmHWM"), "base_mb": base}))
"""


def memory_cgroup(cap_mib: int) -> Path | None:
    """A fresh memory cgroup capped at ``cap_mib``: its procs file, or None where none can be
    made (not root, no memory controller)."""
    name = f"hsimap-bench-{os.getpid()}"
    v2, v1 = Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/memory")
    try:
        if (v2 / "cgroup.controllers").exists():
            (v2 / name).mkdir(exist_ok=True)
            (v2 / name / "memory.max").write_text(str(cap_mib * 2**20))
            (v2 / name / "memory.swap.max").write_text("0")
            return v2 / name / "cgroup.procs"
        if v1.is_dir():
            (v1 / name).mkdir(exist_ok=True)
            (v1 / name / "memory.limit_in_bytes").write_text(str(cap_mib * 2**20))
            return v1 / name / "cgroup.procs"
    except OSError:
        return None
    return None


def child(mode: str, scene: Path, model_dir: Path, out: Path | str, workers: int, scan: str,
          timeout: int, cgroup: Path | None = None) -> dict:
    env = dict(os.environ, HSIMAP_SCAN=scan)
    # The child joins the cgroup before it execs, so every byte it uses is counted.
    join = (lambda: cgroup.write_text(str(os.getpid()))) if cgroup else None
    try:
        r = subprocess.run([sys.executable, "-c", CHILD, mode, str(scene), str(model_dir),
                            str(out), str(workers)], capture_output=True, text=True,
                           timeout=timeout, env=env, preexec_fn=join)
    except subprocess.TimeoutExpired:
        return {"error": f"over {timeout} s"}
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["killed"])[-1]
        return {"error": f"exit {r.returncode}: {last[:60]}"}
    return json.loads(r.stdout.strip().splitlines()[-1])


def rate(r: dict, px: int) -> str:
    return f"{px / r['seconds']:,.0f}" if "seconds" in r else r["error"]


def mem(r: dict) -> str:
    return f"{r['rss_mb']:,.0f}" if "rss_mb" in r else "-"


def per_window(r: dict, workers: int) -> str:
    return f"{(r['rss_mb'] - r['base_mb']) / workers:,.0f}" if "rss_mb" in r else "-"


def capped_run(d: Path, args: argparse.Namespace) -> str:
    """End to end on a float32 scene larger than the memory cap, inside a memory cgroup."""
    from hsimap.synth import SynthSpec, make_scene

    cgroup = memory_cgroup(args.cap_mib)
    if cgroup is None:
        return f"memory cap {args.cap_mib} MiB: no cgroup could be made (needs root)"
    side = args.cap_size
    made = make_scene(d / f"cap{side}.tif", SynthSpec(width=side, height=side,
                                                      bands=args.bands, seed=3))
    raw = side * side * args.bands * 4 / 2**30
    r = child("stream", made.scene, d / "model", d / "ocap", args.workers, "fused",
              args.timeout, cgroup)
    Path(made.scene).unlink()
    try:
        cgroup.parent.rmdir()
    except OSError:
        pass
    status = "completed" if "seconds" in r else f"FAILED ({r['error']})"
    return (f"Scene {side} x {side} x {args.bands} float32, raw {raw:.2f} GiB, in a memory "
            f"cgroup capped at {args.cap_mib} MiB ({args.cap_mib / 1024 / raw:.2f} of the raw "
            f"size), {args.workers} workers: {status}"
            + (f", {side * side / r['seconds']:,.0f} px/s, peak RSS {r['rss_mb']:,.0f} MiB"
               if "seconds" in r else ""))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[512])
    ap.add_argument("--memory-sizes", type=int, nargs="*", default=[])
    ap.add_argument("--bands", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--scans", nargs="+", default=["fused", "pscan"])
    ap.add_argument("--timeout", type=int, default=7200)
    ap.add_argument("--cap-mib", type=int, default=None)
    ap.add_argument("--cap-size", type=int, default=2048)
    args = ap.parse_args(argv)
    from hsimap.io.labels import load_labels
    from hsimap.io.scene import open_scene
    from hsimap.synth import SynthSpec, make_scene
    from hsimap.workflows.train import TrainOptions, train

    rows, speed, memory = [], {}, []
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        base = make_scene(d / "train.tif", SynthSpec(width=128, height=128, bands=args.bands))
        scene = open_scene(base.scene)
        labels, tbl = load_labels(base.labels, scene)
        train(scene, labels, tbl, d / "model",
              TrainOptions(steps=3, hidden=args.hidden, progress=False))
        for side in args.sizes:
            made = make_scene(d / f"s{side}.tif",
                              SynthSpec(width=side, height=side, bands=args.bands, seed=1))
            px = side * side
            for scan in args.scans:
                one, many, bare = (child(mode, made.scene, d / "model", d / f"o{tag}{scan}{side}",
                                         w, scan, args.timeout)
                                   for mode, w, tag in (("stream", 1, "1"),
                                                        ("stream", args.workers, "n"),
                                                        ("bare", 1, "b")))
                over = (f"{one['seconds'] / bare['seconds']:.2f}"
                        if "seconds" in one and "seconds" in bare else "-")
                speed[(side, scan)] = many
                rows.append([f"{side} x {side} ({px / 1e6:.2f} Mpx)", scan, rate(bare, px),
                             rate(one, px), rate(many, px), over, mem(one), mem(many),
                             per_window(many, args.workers)])
                print(rows[-1], file=sys.stderr, flush=True)
        for side in args.memory_sizes:
            made = make_scene(d / f"m{side}.tif",
                              SynthSpec(width=side, height=side, bands=args.bands, seed=2,
                                        dtype="int16"))
            r = child("stream", made.scene, d / "model", d / f"om{side}", args.workers,
                      "fused", args.timeout)
            memory.append([f"{side} x {side} ({side * side / 1e6:.1f} Mpx)",
                           f"{os.path.getsize(made.scene) / 2**30:.2f}",
                           rate(r, side * side), mem(r), per_window(r, args.workers)])
            print(memory[-1], file=sys.stderr, flush=True)
            Path(made.scene).unlink()
        cap_row = ""
        if args.cap_mib:
            cap_row = capped_run(d, args)
            print(cap_row, file=sys.stderr, flush=True)
    print(table(["scene", "scan", "bare forward px/s (1 thread)", "px/s, 1 worker",
                 f"px/s, {args.workers} workers", "overhead (1 worker / bare)",
                 "peak RSS MiB, 1 worker", f"peak RSS MiB, {args.workers} workers",
                 "RSS MiB per window in flight"], rows))
    for side in args.sizes:
        a, b = speed.get((side, "fused"), {}), speed.get((side, "pscan"), {})
        if "seconds" in a and "seconds" in b:
            print(f"\n{side} x {side}: fused / pscan end-to-end speed at {args.workers} "
                  f"workers = {b['seconds'] / a['seconds']:.1f}x")
    if args.cap_mib:
        print()
        print(cap_row)
    if memory:
        print()
        print(table(["scene (int16)", "raw size GiB", f"px/s, {args.workers} workers",
                     "peak RSS MiB", "RSS MiB per window in flight"], memory))
    print(f"\n{args.bands} bands, model hidden {args.hidden}, window 128, halo 16. "
          + stamp("python benchmarks/predict.py " + " ".join(argv or sys.argv[1:])))


if __name__ == "__main__":
    main()
