"""The fused CPU selective scan against a plain sequential recurrence, and the Mamba block and a
model saved before the scan existed against the kernel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mambapy.mamba import MambaBlock

from hsimap.model.mamba import Mamba
from hsimap.model.scan import BLOCK, CHUNK, selective_scan

DATA = Path(__file__).parent / "data"


def sequential_scan(u, delta, A, B, C, D):  # noqa: N803 - the paper's symbols
    """h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t,  y_t = C_t . h_t + D u_t, step by step."""
    batch, length, d_inner = u.shape
    h = u.new_zeros(batch, d_inner, A.shape[1])
    ys = []
    for t in range(length):
        dt = delta[:, t, :, None]
        h = torch.exp(dt * A) * h + dt * B[:, t, None, :] * u[:, t, :, None]
        ys.append((h * C[:, t, None, :]).sum(-1) + D * u[:, t])
    return torch.stack(ys, 1)


def _inputs(batch, length, d_inner, d_state, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype).requires_grad_(True)  # noqa: E731
    # Raw parameters as the block holds them: delta = softplus(.), A = -exp(A_log).
    return r(batch, length, d_inner), r(batch, length, d_inner), r(d_inner, d_state), \
        r(batch, length, d_state), r(batch, length, d_state), r(d_inner)


def _outputs_and_grads(scan, raw):
    u, delta_raw, a_log, B, C, D = raw  # noqa: N806
    y = scan(u, F.softplus(delta_raw), -torch.exp(a_log), B, C, D)
    weights = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)
    return (y, *torch.autograd.grad((y * weights).sum(), raw))


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


# Lengths 1, 7, 64 (= one chunk) and 3,000 (many chunks, and the backward pass's checkpoints);
# widths that fill no block exactly, and one over two blocks.
CASES = [(2, 1, 5, 3), (3, 7, 70, 16), (1, CHUNK, 130, 4), (1, 3000, BLOCK + 3, 16)]


@pytest.mark.parametrize("batch,length,d_inner,d_state", CASES)
def test_float64_matches_the_recurrence(batch, length, d_inner, d_state):
    # In float64 the kernel calls libm's exp: the only differences are summation order, so
    # agreement to 1e-10 (relative to the largest value) leaves room for length-3,000 sums and
    # still fails on any wrong term.
    raw = _inputs(batch, length, d_inner, d_state, torch.float64, seed=length)
    fused = _outputs_and_grads(selective_scan, raw)
    ref = _outputs_and_grads(sequential_scan, raw)
    names = ["y", "du", "d delta", "d A_log", "dB", "dC", "dD"]
    for name, a, b in zip(names, fused, ref, strict=True):
        assert _rel(a, b) < 1e-10, name


@pytest.mark.parametrize("batch,length,d_inner,d_state", CASES)
def test_float32_matches_the_float64_recurrence(batch, length, d_inner, d_state):
    # float32 uses the polynomial exp (relative error < 2e-7). Errors add along the sequence:
    # 1e-4 relative to the largest value bounds float32 rounding over 3,000 steps, and is far
    # below what a wrong term gives (order 1).
    raw64 = _inputs(batch, length, d_inner, d_state, torch.float64, seed=length)
    raw32 = [t.detach().float().requires_grad_(True) for t in raw64]
    fused = _outputs_and_grads(selective_scan, raw32)
    ref = _outputs_and_grads(sequential_scan, raw64)
    for a, b in zip(fused, ref, strict=True):
        assert a.dtype == torch.float32
        assert _rel(a.double(), b) < 1e-4


def test_forward_does_not_depend_on_the_thread_count():
    raw = [t.detach().float() for t in _inputs(3, 200, 150, 16, torch.float64, seed=1)]
    args = (raw[0], F.softplus(raw[1]), -torch.exp(raw[2]), raw[3], raw[4], raw[5])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = selective_scan(*args)
        torch.set_num_threads(2)
        two = selective_scan(*args)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)


@pytest.mark.parametrize("batch,length,d_model", [(3, 1, 8), (4, 4, 32), (1, 300, 64)])
def test_block_matches_mambapy(batch, length, d_model):
    # Same parameters, same maths: the channel-last block with the fused scan against mambapy's
    # own forward (parallel scan), outputs and every parameter's gradient, in float64.
    torch.manual_seed(length)
    block = Mamba(d_model).double()
    x = torch.randn(batch, length, d_model, dtype=torch.float64, requires_grad=True)
    inputs = [x, *block.parameters()]
    fused = block(x)
    ref = MambaBlock.forward(block, x)
    assert _rel(fused, ref) < 1e-12
    for a, b in zip(torch.autograd.grad(fused.sum(), inputs),
                    torch.autograd.grad(ref.sum(), inputs), strict=True):
        assert _rel(a, b) < 1e-10


@pytest.mark.parametrize("batch,length,d_model", [(3, 1, 8), (4, 4, 32), (1, 300, 64),
                                                  (2, 70, 33)])
def test_fused_block_without_gradients_matches_mambapy(batch, length, d_model):
    # Inference runs the block as two kernels (convolution + SiLU; dt_proj, softplus, scan and
    # gate) between the projections; float64 is exact to libm, float32 uses the polynomial
    # exp and log1p. d_model 33: an inner width (66) that fills no channel block.
    torch.manual_seed(length)
    block = Mamba(d_model).double()
    with torch.no_grad():
        # Biases from -30 to 30 reach softplus's tails (and its x > 20 branch).
        block.dt_proj.bias.add_(torch.linspace(-30, 30, block.dt_proj.bias.numel()))
        x = torch.randn(batch, length, d_model, dtype=torch.float64)
        ref = MambaBlock.forward(block, x)
        assert _rel(block(x), ref) < 1e-10
        assert _rel(block.float()(x.float()).double(), ref) < 1e-5


def test_pscan_backend_is_the_reference(monkeypatch):
    torch.manual_seed(0)
    block = Mamba(16)
    x = torch.randn(2, 9, 16)
    fused = block(x)
    other = Mamba(16, scan="pscan")
    other.load_state_dict(block.state_dict(), strict=True)
    ref = other(x)
    assert not torch.equal(fused, ref)  # really another code path
    assert _rel(fused, ref) < 1e-5
    # The environment sets the default of blocks built afterwards, not of those built before.
    monkeypatch.setenv("HSIMAP_SCAN", "pscan")
    assert torch.equal(block(x), fused) and Mamba(16).scan == "pscan"
    monkeypatch.setenv("HSIMAP_SCAN", "nope")
    with pytest.raises(ValueError, match="HSIMAP_SCAN"):
        Mamba(16)
    with pytest.raises(ValueError, match="scan='nope'"):
        Mamba(16, scan="nope")


def test_model_saved_before_the_fused_scan_gives_the_same_map(tmp_path):
    """tests/data/model_v0_1 was trained and applied by hsimap before the fused scan (mambapy's
    parallel scan); its class map is classes_before.npy. Same scene, regenerated."""
    from hsimap.io.scene import open_scene
    from hsimap.model.store import load_model
    from hsimap.synth import SynthSpec, make_scene
    from hsimap.workflows.predict import write_outputs

    made = make_scene(tmp_path / "scene.tif",
                      SynthSpec(width=96, height=80, bands=24, endmembers=4, classes=4,
                                region_size=32, seed=5))
    model = load_model(DATA / "model_v0_1")
    report = write_outputs(open_scene(made.scene), model, tmp_path / "maps", progress=False,
                           quicklooks=False, workers=1)
    import rasterio

    with rasterio.open(report.paths["classes"]) as src:
        now = src.read(1)
    before = np.load(DATA / "model_v0_1" / "classes_before.npy")
    assert now.shape == before.shape
    agree = (now == before).mean()
    print(f"class maps agree on {agree:.5f} of pixels")
    assert agree >= 0.999


def _cuda_ready() -> bool:
    from hsimap.model.mamba import cuda_kernels_available

    return cuda_kernels_available()


@pytest.mark.skipif(not _cuda_ready(), reason="needs a CUDA GPU and mamba-ssm (hsimap[cuda])")
def test_cuda_kernels_match_the_cpu_scan():
    # The same block, its weights handed to mamba_ssm.Mamba on the GPU, against the fused CPU
    # path. mamba-ssm computes in float32 with its own summation order: 1e-3 relative.
    from torch import nn

    from hsimap.model.mamba import use_cuda_kernels

    torch.manual_seed(0)
    holder = nn.ModuleDict({"block": Mamba(32)})
    x = torch.randn(2, 300, 32)
    with torch.no_grad():
        cpu = holder["block"](x)
        use_cuda_kernels(holder.to("cuda"))
        assert type(holder["block"]).__module__.startswith("mamba_ssm")
        gpu = holder["block"](x.cuda()).cpu()
    assert _rel(gpu, cpu) < 1e-3
