"""Training speed: seconds per step with hsimap's fused scan and with mambapy's parallel scan.

Each (scene, scan) pair trains with the default options for a few steps in a fresh process
(``HSIMAP_SCAN`` selects the scan); the first step (numba compilation, allocator warm-up) is
left out of the mean. Ratios are measured in one run on one machine.

    python benchmarks/train_speed.py --scenes salinas houston --steps 12
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import stamp, table  # noqa: E402

CHILD = r"""
import csv, json, sys, tempfile
sys.path.insert(0, sys.argv[3])
from classification import load
from hsimap.workflows.train import TrainOptions, train
from pathlib import Path
with tempfile.TemporaryDirectory() as d:
    scene, labels, tbl = load(sys.argv[1], Path(d))
    train(scene, labels, tbl, d + "/m", TrainOptions(steps=int(sys.argv[2]), progress=False))
    rows = list(csv.DictReader(open(d + "/m/history.csv")))
secs = [float(r["seconds"]) for r in rows[1:]]
print(json.dumps({"s_per_step": sum(secs) / len(secs)}))
"""


def run(scene: str, scan: str, steps: int) -> dict:
    env = dict(os.environ, HSIMAP_SCAN=scan)
    r = subprocess.run([sys.executable, "-c", CHILD, scene, str(steps),
                        str(Path(__file__).resolve().parent)],
                       capture_output=True, text=True, env=env)
    if r.returncode != 0:
        return {"error": (r.stderr.strip().splitlines() or ["failed"])[-1][:80]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", nargs="+", default=["salinas", "houston"])
    ap.add_argument("--steps", type=int, default=12)
    args = ap.parse_args(argv)
    if args.steps < 2:
        ap.error("--steps must be at least 2 (the first step is left out)")
    rows = []
    for scene in args.scenes:
        fused, pscan = run(scene, "fused", args.steps), run(scene, "pscan", args.steps)
        ok = "s_per_step" in fused and "s_per_step" in pscan
        rows.append([scene, f"{pscan.get('s_per_step', 0):.3f}" if ok else pscan.get("error"),
                     f"{fused.get('s_per_step', 0):.3f}" if ok else fused.get("error"),
                     f"{pscan['s_per_step'] / fused['s_per_step']:.2f}x" if ok else "-",
                     f"{300 * fused['s_per_step'] / 60:.1f}" if ok else "-"])
    print(table(["scene", "s/step, pscan (before)", "s/step, fused", "speed-up",
                 "300 steps, fused (min, no validation)"], rows))
    print("\nDefault options (hidden 128, window 64, batch 4), steps 2.." + str(args.steps) + ". "
          + stamp("python benchmarks/train_speed.py " + " ".join(argv or sys.argv[1:])))


if __name__ == "__main__":
    main()
