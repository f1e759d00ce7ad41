#!/usr/bin/env bash
# The GPU evidence of issue 30, in one run of under 8 minutes on an H100: the CUDA-marked
# tests, then `hsimap predict --device cuda` on a 2048 x 2048 x 200 scene (px/s, peak GPU
# memory) and its class map against the CPU's on a 512 x 512 crop of it.
#
#   bash benchmarks/gpu_check.sh            (from the repository root, on the GPU machine)
#
# It uses the Python it finds (PYTHON, else .venv/bin/python, else python3) with torch's
# CUDA build already installed: the device machines reach no package index.
set -euo pipefail
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
OUT=${OUT:-$(mktemp -d)}
"$PY" -m pip install --no-deps --no-build-isolation -q -e . || true
"$PY" - <<'PY'
import torch
print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")
try:
    import triton; print("triton", triton.__version__)
except ImportError:
    print("triton: not installed")
try:
    import mamba_ssm; print("mamba-ssm", mamba_ssm.__version__)
except ImportError:
    print("mamba-ssm: not installed (the Triton scan runs)")
PY
"$PY" -m pytest -q -x tests/test_scan.py tests/test_triton_scan.py tests/test_precision.py
"$PY" - "$OUT" <<'PY'
import sys, time
from pathlib import Path
import numpy as np, rasterio, torch
from hsimap.io.labels import load_labels
from hsimap.io.scene import open_scene
from hsimap.model.store import load_model
from hsimap.synth import SynthSpec, make_scene
from hsimap.workflows.train import TrainOptions, train
from hsimap.workflows.predict import write_outputs
d = Path(sys.argv[1])
base = make_scene(d / "train.tif", SynthSpec(width=128, height=128, bands=200))
scene = open_scene(base.scene)
labels, table = load_labels(base.labels, scene)
train(scene, labels, table, d / "model", TrainOptions(steps=3, hidden=128, progress=False))
big = make_scene(d / "big.tif", SynthSpec(width=2048, height=2048, bands=200, seed=1))
gpu = load_model(d / "model", "cuda")
torch.cuda.reset_peak_memory_stats()
t = time.perf_counter()
write_outputs(open_scene(big.scene), gpu, d / "gpu", progress=False, quicklooks=False)
secs = time.perf_counter() - t
print(f"GPU predict 2048 x 2048 x 200: {2048 ** 2 / secs:,.0f} px/s end to end, "
      f"peak GPU memory {torch.cuda.max_memory_allocated() / 2 ** 30:.2f} GiB")
crop = make_scene(d / "crop.tif", SynthSpec(width=512, height=512, bands=200, seed=1))
maps = {}
for dev in ("cuda", "cpu"):
    write_outputs(open_scene(crop.scene), load_model(d / "model", dev), d / f"crop-{dev}",
                  progress=False, quicklooks=False)
    with rasterio.open(d / f"crop-{dev}" / "crop_classes.tif") as src:
        maps[dev] = src.read(1)
print(f"class map GPU = CPU on {100 * np.mean(maps['cuda'] == maps['cpu']):.2f}% of pixels")
# One forward of a batch of 8 windows (64 px, 200 bands): every cluster's scan in one Triton
# launch per branch against a launch per cluster block (the packed path's evidence).
net = gpu.network
x = torch.rand(8, 200, 64, 64, device="cuda")
valid = torch.ones(8, 64, 64, dtype=torch.bool, device="cuda")
origins = [(0, 64 * k) for k in range(8)]
for packed in (True, False):
    net.spatial.packed = net.spectral.packed = packed
    with torch.no_grad():
        for _ in range(2):
            net(x, valid, origins)
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(5):
            net(x, valid, origins)
        torch.cuda.synchronize()
    ms = (time.perf_counter() - t) / 5 * 1e3
    print(f"forward, 8 windows of 64 px, {'packed' if packed else 'a launch per block'}: "
          f"{ms:.1f} ms ({8 * 64 * 64 / ms * 1e3:,.0f} window px/s)")
PY
