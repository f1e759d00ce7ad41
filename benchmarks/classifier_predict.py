"""Streaming prediction with each classifier of ``train --classifier``: px/s and peak RSS.

A synthetic scene (``hsimap synth``) is trained on with each classifier (the Mamba for a few
steps only: its prediction cost does not depend on how well it is trained), then predicted
end to end (``hsimap predict``, quicklooks off) in a fresh process each; peak RSS is that
process's (``os.wait4``).

    python benchmarks/classifier_predict.py --size 512 --bands 200
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import stamp, table  # noqa: E402


def timed(argv: list[str]) -> tuple[float, float]:
    """Seconds and peak RSS (MiB) of a command."""
    t = time.perf_counter()
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(p.pid, 0)
    seconds = time.perf_counter() - t
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {p.stderr.read().decode()[-2000:]}")
    return seconds, usage.ru_maxrss / 1024


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--bands", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--classifiers", nargs="+", default=["mamba", "svm", "rf"])
    args = ap.parse_args(argv)
    hs = [sys.executable, "-m", "hsimap"]
    rows = []
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        scene, labels = d / "scene.tif", d / "scene_labels.tif"
        subprocess.run(hs + ["synth", "-o", str(scene), "--width", str(args.size), "--height",
                             str(args.size), "--bands", str(args.bands), "--classes", "8",
                             "--endmembers", "8"], check=True, capture_output=True)
        for kind in args.classifiers:
            m = d / f"model_{kind}"
            train_s, _ = timed(hs + ["train", str(scene), "-l", str(labels), "-o", str(m),
                                     "--classifier", kind, "--steps", "5", "--quiet"])
            seconds, rss = timed(hs + ["predict", str(scene), "-m", str(m), "-o",
                                       str(d / f"out_{kind}"), "--workers",
                                       str(args.workers), "--no-quicklooks", "--quiet"])
            px = args.size * args.size
            rows.append([kind, f"{train_s:.0f}" if kind != "mamba" else "(5 steps)",
                         f"{seconds:.1f}", f"{px / seconds:,.0f}", f"{rss:.0f}"])
            print(f"{kind}: {px / seconds:,.0f} px/s", file=sys.stderr, flush=True)
    print(table(["classifier", "train s", "predict s", "px/s", "peak RSS MiB"], rows))
    print("\n" + stamp("python benchmarks/classifier_predict.py " +
                       " ".join(argv or sys.argv[1:])))


if __name__ == "__main__":
    main()
