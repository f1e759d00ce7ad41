"""Class probabilities on disk: float32 against uint8 (scale 1/254), both DEFLATE-compressed.

Predicts SCENE with MODEL twice (``--probabilities-type float32`` and ``uint8``) and prints
each file's size, bytes per pixel and the largest difference between the two.

    python benchmarks/probabilities_size.py SCENE -m MODEL
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import rasterio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import stamp, table  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scene", type=Path)
    ap.add_argument("-m", "--model", required=True, type=Path)
    args = ap.parse_args(argv)
    rows, arrays = [], {}
    with tempfile.TemporaryDirectory() as d:
        for kind in ("float32", "uint8"):
            out = Path(d) / kind
            subprocess.run([sys.executable, "-m", "hsimap", "-q", "predict", args.scene, "-m",
                            args.model, "-o", out, "--probabilities", "--probabilities-type",
                            kind, "--no-quicklooks"], check=True)
            path = out / f"{args.scene.stem}_probabilities.tif"
            with rasterio.open(path) as src:
                px, bands = src.width * src.height, src.count
                a = src.read().astype(np.float64)
                if kind == "uint8":
                    a = np.where(a == src.nodata, np.nan, a * src.scales[0])
                arrays[kind] = a
            size = path.stat().st_size
            rows.append([kind, str(bands), f"{size / 2**20:.2f}", f"{size / px:.2f}",
                         f"{size / (px * bands):.3f}"])
    diff = np.nanmax(np.abs(arrays["float32"] - arrays["uint8"]))
    rows[1].append(f"{diff:.5f}")
    rows[0].append("-")
    print(table(["storage", "bands (classes)", "MiB", "bytes / px", "bytes / px / class",
                 "max abs difference"], rows))
    print("\n" + stamp("python benchmarks/probabilities_size.py " + " ".join(argv or sys.argv[1:])))


if __name__ == "__main__":
    main()
