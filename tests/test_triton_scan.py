"""The Triton selective scan, run by Triton's interpreter on the CPU, against the numba scan:
outputs and every gradient to 1e-4 in float32. Each case runs in a fresh process, as the
interpreter is chosen when triton is first imported (``TRITON_INTERPRET=1``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
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


PACKED = r"""
import json
import torch, torch.nn.functional as F
from hsimap.model.network import ClusterMamba, ModelConfig
from hsimap.model.scan import selective_scan as numba_scan
from hsimap.model.triton_scan import packed_scan

def rel(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))

def grads(f, inputs):
    y = f()
    w = torch.linspace(-1, 1, y.numel()).view_as(y)
    return [y.detach(), *torch.autograd.grad((y * w).sum(), inputs)]

# Three blocks' sequences end to end: lengths across a program group's 64 rows, 1-row ones,
# a run of the spectral branch's 4-token ones, a block with none.
torch.manual_seed(0)
lengths = [[1, 5, 70, 3], [4] * 17, []]
rows, d_inner, n = sum(map(sum, lengths)), 20, 8
raw = [torch.randn(*s).requires_grad_(True) for s in
       [(rows, d_inner), (rows, d_inner), (3, d_inner, n), (rows, n), (rows, n), (3, d_inner)]]

def one_by_one():
    u, dr, al, B, C, D = raw
    ys, r = [], 0
    for p, lens in enumerate(lengths):
        for k in lens:
            s = slice(r, r + k)
            ys.append(numba_scan(u[None, s], F.softplus(dr[None, s]), -torch.exp(al[p]),
                                 B[None, s], C[None, s], D[p])[0])
            r += k
    return torch.cat(ys)

def packed():
    u, dr, al, B, C, D = raw
    return packed_scan(u, F.softplus(dr), -torch.exp(al), B, C, D, lengths)

out = {"scan": [rel(a, b) for a, b in zip(grads(packed, raw), grads(one_by_one, raw))]}

# A cluster branch over two windows, packed against one block at a time (numba's scan):
# its output and the gradients of its input and every parameter.
cfg = ModelConfig(bands=8, classes=2, hidden=16, endmembers=3)
g = torch.Generator().manual_seed(1)
pick = lambda lo, hi, k: lo + torch.randperm(hi - lo, generator=g)[:k]
seqs = [[pick(0, 14, 5), pick(14, 30, 7)], [pick(0, 14, 1), pick(14, 30, 0)],
        [pick(0, 14, 9), pick(14, 30, 4)]]
rest = [torch.arange(0, 14, 2), torch.arange(15, 30, 3)]
x = torch.randn(30, 16).requires_grad_(True)
for name, spectral in (("spatial", False), ("spectral", True)):
    m = ClusterMamba(cfg, 16, spectral=spectral)
    inputs = [x, *m.parameters()]
    res = {}
    for mode in (False, True):
        m.packed = mode
        res[mode] = grads(lambda: m(x, seqs, rest)[0], inputs)
    out[name] = [rel(a, b) for a, b in zip(res[True], res[False])]

# The whole network, two windows: the logits of a batch, and a training step's gradients (the
# spectral branch restricted to the needed pixels). Scale-relative: biases ahead of a batch
# norm get gradients of rounding size only.
import copy
from hsimap.model.network import UnmixingGuidedMamba
net = UnmixingGuidedMamba(ModelConfig(bands=12, classes=3, endmembers=4, hidden=16, variants=3,
                                      min_tokens=5))
state = copy.deepcopy(net.state_dict())
x = torch.rand(2, 12, 12, 12)
valid = torch.ones(2, 12, 12, dtype=torch.bool)
valid[1, :4] = False
need = torch.zeros(2, 12, 12, dtype=torch.bool)
need[0, 3, 3] = need[1, 8, 9] = True
res = {}
for mode in (False, True):
    net.load_state_dict(state)
    net.spatial.packed = net.spectral.packed = mode
    with torch.no_grad():
        logits = net.eval()(x, valid, [(0, 0), (24, 8)]).logits
    net.train().zero_grad()
    y = net(x, valid, [(0, 0), (24, 8)], need=need, generator=torch.Generator().manual_seed(3))
    y.logits[:, :, need[0]].square().mean().backward()
    res[mode] = [logits, *[torch.zeros_like(p) if p.grad is None else p.grad.clone()
                           for p in net.parameters()]]
top = max(float(g.abs().max()) for g in res[False][1:])
out["network"] = [rel(res[True][0], res[False][0])] + [
    float((a - b).abs().max()) / top for a, b in zip(res[True][1:], res[False][1:])]
print(json.dumps(out))
"""


def test_packed_scan_cluster_branch_and_network_match_one_block_at_a_time():
    env = dict(os.environ, TRITON_INTERPRET="1")
    r = subprocess.run([sys.executable, "-c", PACKED], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert len(out["scan"]) == 7 and len(out["spatial"]) > 20 and len(out["network"]) > 100
    for case, rels in out.items():
        for i, value in enumerate(rels):
            assert value < 1e-4, (case, i, value)


@pytest.mark.parametrize("lengths,first,groups,counts", [
    # Groups start at a sequence start and close at the first start 64 rows or more later.
    ([[1, 5, 70, 3]], [0, 1, 6, 76], [(0, 76, 0), (76, 79, 0)], [2]),
    ([[4] * 40], list(range(0, 160, 4)), [(0, 64, 0), (64, 128, 0), (128, 160, 0)], [3]),
    ([[], [2, 2]], [0, 2], [(0, 4, 1)], [0, 1]),
])
def test_packed_layout(lengths, first, groups, counts):
    from hsimap.model.triton_scan import layout

    f, g, c = layout(lengths)
    assert np.flatnonzero(f).tolist() == first and len(f) == sum(map(sum, lengths))
    assert [tuple(row) for row in g.tolist()] == groups
    assert c == counts


def test_packed_layout_refuses_an_empty_sequence():
    from hsimap.model.triton_scan import layout

    with pytest.raises(ValueError, match="at least one row"):
        layout([[3, 0, 2]])


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


def _gpu_with_triton() -> bool:
    import torch

    from hsimap.model import triton_scan

    return torch.cuda.is_available() and triton_scan.available()


@pytest.mark.skipif(not _gpu_with_triton(), reason="needs a CUDA GPU with Triton")
def test_on_a_gpu_the_packed_network_gives_the_cpus_numbers(monkeypatch):
    """The whole network on a GPU (blocks packed into one Triton launch per branch, compiled):
    a batch of three windows against the CPU one window at a time, and a training step's
    gradients against the CPU's. Float32 with other summation orders: 1e-4 relative."""
    import torch

    from hsimap.model.network import ModelConfig, UnmixingGuidedMamba

    # cuDNN convolves in TF32 by default (10-bit mantissa): full float32 here, so that what
    # differs is the scan's packing, not the convolutions' precision.
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)

    torch.manual_seed(0)
    net = UnmixingGuidedMamba(ModelConfig(bands=12, classes=3, endmembers=4, hidden=32,
                                          variants=3, min_tokens=5))
    x = torch.rand(3, 12, 24, 24)
    valid = torch.ones(3, 24, 24, dtype=torch.bool)
    valid[1, :10] = False
    origins = [(0, 0), (24, 8), (100, 37)]
    with torch.no_grad():
        cpu = [net.eval()(x[k:k + 1], valid[k], origins[k]).logits[0] for k in range(3)]
        gpu = net.to("cuda")(x.cuda(), valid.cuda(), origins).logits.cpu()
    assert net.spatial._packs(x.cuda()) and net.spectral._packs(x.cuda())
    for k in range(3):
        rel = float((gpu[k] - cpu[k]).abs().max() / cpu[k].abs().max())
        assert rel < 1e-4, (k, rel)

    def grads(device: str) -> list:
        net.to(device).train()
        net.zero_grad()
        out = net(x.to(device), valid.to(device), origins)
        out.logits.square().mean().backward()
        return [p.grad.detach().cpu() for p in net.parameters() if p.grad is not None]

    on_gpu, on_cpu = grads("cuda"), grads("cpu")
    top = max(float(g.abs().max()) for g in on_cpu)   # biases ahead of a batch norm: ~0
    for g_gpu, g_cpu in zip(on_gpu, on_cpu, strict=True):
        assert float((g_gpu - g_cpu).abs().max()) < 1e-3 * top
