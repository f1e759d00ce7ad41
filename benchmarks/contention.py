"""Two training runs on one machine: do their thread pools fight?

The Houston crop with the default model, ``--steps`` steps, in fresh processes: one run with
``threads=2``; two runs at once with ``threads=1`` each (what docs/parameters.md advises on a
2-core machine); two runs at once left at the default (each takes every core). Wall time of
each run, and its ratio to the single run, measured in one go.

    python benchmarks/contention.py --steps 60
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import stamp, table  # noqa: E402

CHILD = r"""
import json, sys, tempfile, time
sys.path.insert(0, sys.argv[1])
from classification import load
from hsimap.workflows.train import TrainOptions, train
scene, labels, tbl = load("houston")
threads = None if sys.argv[3] == "default" else int(sys.argv[3])
t = time.perf_counter()
with tempfile.TemporaryDirectory() as d:
    train(scene, labels, tbl, d, TrainOptions(steps=int(sys.argv[2]), threads=threads,
                                              progress=False))
print(json.dumps({"wall": time.perf_counter() - t}))
"""


def start(steps: int, threads: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, str(Path(__file__).resolve().parent),
                             str(steps), threads], stdout=subprocess.PIPE, text=True)


def wall(p: subprocess.Popen) -> float:
    out, _ = p.communicate()
    return json.loads(out.strip().splitlines()[-1])["wall"]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    alone = wall(start(args.steps, "2"))
    rows = [["one run, --threads 2", f"{alone:.0f}", "1.00"]]
    for label, threads in (("two at once, --threads 1 each", "1"),
                           ("two at once, default threads (2 each)", "default")):
        procs = [start(args.steps, threads) for _ in range(2)]
        walls = [wall(p) for p in procs]
        rows.append([label, " / ".join(f"{w:.0f}" for w in walls),
                     " / ".join(f"{w / alone:.2f}" for w in walls)])
    print(table(["case", "wall s per run", "ratio to one run alone"], rows))
    print(f"\nHouston crop, default model, {args.steps} steps; {time.perf_counter() - t0:.0f} s "
          "in all. " + stamp("python benchmarks/contention.py " + " ".join(argv or
                                                                        sys.argv[1:])))


if __name__ == "__main__":
    main()
