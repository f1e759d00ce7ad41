"""The Triton selective scan, run by Triton's interpreter on the CPU, against the numba scan:
outputs and every gradient to 1e-4 in float32. Each case runs in a fresh process, as the
interpreter is chosen when triton is first imported (``TRITON_INTERPRET=1``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")

CHECK = r"""
import json, sys
import torch, torch.nn.functional as F
from hsimap.model.scan import selective_scan as numba_scan
from hsimap.model.triton_scan import selective_scan as triton_scan
batch, length, d_inner, d_state = map(int, sys.argv[1:5])
g = torch.Generator().manual_seed(length)
raw = [torch.randn(*s, generator=g).requires_grad_(True) for s in
       [(batch, length, d_inner), (batch, length, d_inner), (d_inner, d_state),
        (batch, length, d_state), (batch, length, d_state), (d_inner,)]]
def run(scan):
    u, dr, al, B, C, D = raw
    y = scan(u, F.softplus(dr), -torch.exp(al), B, C, D)
    w = torch.linspace(-1, 1, y.numel()).view_as(y)
    return [y, *torch.autograd.grad((y * w).sum(), raw)]
ref = [t.detach() for t in run(numba_scan)]
rel = [float((a.detach() - b).abs().max() / b.abs().max().clamp_min(1e-30))
       for a, b in zip(run(triton_scan), ref)]
with torch.no_grad():  # no states kept: the forward alone
    u, dr, al, B, C, D = raw
    same = bool(torch.allclose(triton_scan(u, F.softplus(dr), -torch.exp(al), B, C, D),
                               ref[0], rtol=1e-4, atol=1e-5))
print(json.dumps({"rel": rel, "no_grad": same}))
"""


# A width that fills no channel block (BLOCK_D 32), one over two blocks, one step, many steps.
@pytest.mark.parametrize("batch,length,d_inner,d_state", [(2, 1, 5, 4), (3, 37, 70, 16)])
def test_triton_scan_matches_the_numba_scan(batch, length, d_inner, d_state):
    env = dict(os.environ, TRITON_INTERPRET="1")
    r = subprocess.run([sys.executable, "-c", CHECK, str(batch), str(length), str(d_inner),
                        str(d_state)], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    names = ["y", "du", "d delta", "d A_log", "dB", "dC", "dD"]
    for name, rel in zip(names, out["rel"], strict=True):
        assert rel < 1e-4, (name, rel)
    assert out["no_grad"]


def test_a_cpu_run_never_imports_triton():
    # triton costs about 100 MB of RSS at import: only a GPU run without mamba-ssm pays it.
    code = ("import sys, torch\n"
            "from hsimap.model.network import ModelConfig, UnmixingGuidedMamba\n"
            "net = UnmixingGuidedMamba(ModelConfig(bands=8, classes=2, hidden=16)).eval()\n"
            "with torch.no_grad():\n"
            "    net(torch.rand(1, 8, 16, 16), torch.ones(16, 16, dtype=torch.bool))\n"
            "print('triton' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "False"
