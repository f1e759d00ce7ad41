"""Training at scale: a default ``hsimap train`` on synthetic 200-band scenes of growing size.

Scenes of 512 x 512 up to 4096 x 4096 px (0.26 to 16.8 Mpx), 8 classes, mixed from the
embedded USGS spectra, int16 GeoTIFF (``hsimap synth``). Labels in two layouts:

- ``pixels``: the scene's whole truth map with the default protocol (30 training and 10
  validation pixels per class, drawn over the whole scene; the rest test);
- ``polygons``: about 40 squares of 100-400 px spread over the scene, ``--train-fraction 0.5``.

Each run is a fresh ``hsimap train`` process with the given options (the defaults unless
``--args`` says otherwise), alone on the machine; the table gives its wall time, seconds per
step, chips, peak RSS (of the process and its children) and test OA.

    python benchmarks/train_scale.py --sides 512 1024 2048 4096 --layouts pixels polygons
    python benchmarks/train_scale.py --sides 512 --args "--steps 20"
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, stamp, table  # noqa: E402


def make_scene(folder: Path, side: int, bands: int) -> tuple[Path, Path]:
    """The scene and its truth map (cached in ``folder``)."""
    scene, labels = folder / f"scene{side}.tif", folder / f"scene{side}_labels.tif"
    if not scene.exists():
        subprocess.run([sys.executable, "-m", "hsimap", "-q", "synth", "-o", scene,
                        "--width", str(side), "--height", str(side), "--bands", str(bands),
                        "--classes", "8", "--region-size", "96", "--dtype", "int16",
                        "--seed", "1"], check=True)
    return scene, labels


def polygon_labels(labels: Path, out: Path, n: int = 40, seed: int = 0) -> Path:
    """About ``n`` squares of 100-400 px of the truth spread over the scene, as a raster."""
    import rasterio

    if out.exists():
        return out
    rng = np.random.default_rng(seed)
    with rasterio.open(labels) as src:
        truth, profile = src.read(1), src.profile
    h, w = truth.shape
    sparse = np.zeros_like(truth)
    for _ in range(n):
        a = int(rng.integers(10, 21))  # 100-400 px
        r, c = int(rng.integers(0, h - a)), int(rng.integers(0, w - a))
        sparse[r:r + a, c:c + a] = truth[r:r + a, c:c + a]
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(sparse, 1)
    return out


def run_train(scene: Path, labels: Path, out: Path, extra: list[str]) -> dict:
    """One ``hsimap train`` process: wall time, its own peak RSS (``wait4``: the
    children's figure of ``getrusage`` is the largest of every child so far), and what its
    card says."""
    t = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        p = subprocess.Popen([sys.executable, "-m", "hsimap", "-q", "train", scene, "-l",
                              labels, "-o", out, "--overwrite", *extra],
                             stdout=subprocess.DEVNULL, stderr=err, text=True)
        _, status, usage = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t
        p.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        stderr = err.read()
    peak = usage.ru_maxrss
    if p.returncode != 0:
        return {"error": (stderr.strip().splitlines() or ["failed"])[-1][:100]}
    card = json.loads((out / "model.json").read_text())
    tr = card["training"]
    return {"wall": wall, "s_step": tr["seconds_per_step"], "chips": tr["chips"],
            "steps": tr["steps_run"], "rss": peak / 1024,
            "oa": card["test_metrics"]["overall_accuracy"],
            "test_px": tr.get("test_pixels", 0)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sides", type=int, nargs="+", default=[512, 1024, 2048, 4096])
    ap.add_argument("--layouts", nargs="+", default=["pixels", "polygons"],
                    choices=["pixels", "polygons"])
    ap.add_argument("--bands", type=int, default=200)
    ap.add_argument("--args", default="", help="Extra `hsimap train` options, quoted.")
    ap.add_argument("--folder", type=Path, default=ROOT / "bench-output" / "train_scale")
    args = ap.parse_args(argv)
    args.folder.mkdir(parents=True, exist_ok=True)
    extra = shlex.split(args.args)
    rows = []
    for side in args.sides:
        scene, truth = make_scene(args.folder, side, args.bands)
        for layout in args.layouts:
            labels, opts = truth, []
            if layout == "polygons":
                labels = polygon_labels(truth, args.folder / f"scene{side}_polygons.tif")
                opts = ["--train-fraction", "0.5"]
            r = run_train(scene, labels, args.folder / f"model{side}_{layout}", opts + extra)
            if "error" in r:
                rows.append([f"{side} x {side}", layout, r["error"], "", "", "", "", ""])
                continue
            rows.append([f"{side} x {side} ({side * side / 1e6:.2f} Mpx)", layout,
                         f"{r['wall']:.0f}", f"{r['s_step']:.2f}", str(r["chips"]),
                         f"{r['rss']:.0f}", f"{r['oa']:.4f}", str(r["test_px"])])
            print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
    print(table(["scene", "labels", "train wall s", "s/step", "chips", "peak RSS MiB",
                 "test OA", "test px scored"], rows))
    print("\n" + stamp("python benchmarks/train_scale.py " + " ".join(argv or sys.argv[1:])))


if __name__ == "__main__":
    main()
