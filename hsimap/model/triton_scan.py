"""The selective scan as a Triton kernel: a GPU path that needs no CUDA build.

mamba-ssm's wheels are compiled against the local CUDA toolkit; Triton ships with PyTorch's CUDA
wheels and compiles its kernels when first called. On a GPU without mamba-ssm the Mamba block
runs its channel-last form (:class:`hsimap.model.mamba.Mamba`) with this scan.

One program owns a block of channels of one sequence and keeps their state (BLOCK_D x d_state)
in registers while it walks along time, as the CPU kernel (:mod:`hsimap.model.scan`) keeps it
in cache. With gradients the forward pass stores every state (batch x length x d_inner x
d_state, float32) for the backward pass, which walks back in time with them; mamba-ssm
recomputes them by chunks instead, a saving not made here.

Triton's interpreter (``TRITON_INTERPRET=1``, CPU tensors, numpy underneath) runs the same
kernels without a GPU: that is how the tests check them against the numba scan.
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton is in the test extra and in CUDA torch wheels
    triton = None


def available() -> bool:
    return triton is not None


if triton is not None:

    @triton.jit
    def _forward(u, delta, A, B, C, D, y, states, length, d_inner,  # noqa: N803
                 N: tl.constexpr, BLOCK_D: tl.constexpr, KEEP: tl.constexpr):  # noqa: N803
        b = tl.program_id(0)
        offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
        offs_n = tl.arange(0, N)
        live = offs_d < d_inner
        a = tl.load(A + offs_d[:, None] * N + offs_n[None, :], mask=live[:, None], other=0.0)
        skip = tl.load(D + offs_d, mask=live, other=0.0)
        h = tl.zeros([BLOCK_D, N], dtype=tl.float32)
        for t in range(length):
            row = (b * length + t) * d_inner
            x = tl.load(u + row + offs_d, mask=live, other=0.0)
            dt = tl.load(delta + row + offs_d, mask=live, other=0.0)
            bt = tl.load(B + (b * length + t) * N + offs_n)
            ct = tl.load(C + (b * length + t) * N + offs_n)
            h = tl.exp(dt[:, None] * a) * h + (dt * x)[:, None] * bt[None, :]
            if KEEP:
                tl.store(states + (row + offs_d[:, None]) * N + offs_n[None, :], h,
                         mask=live[:, None])
            tl.store(y + row + offs_d, tl.sum(h * ct[None, :], axis=1) + skip * x, mask=live)

    @triton.jit
    def _backward(u, delta, A, B, C, D, states, gy, du, gdelta, gA, gD, gB, gC,  # noqa: N803
                  length, d_inner, batch, N: tl.constexpr, BLOCK_D: tl.constexpr):  # noqa: N803
        b = tl.program_id(0)
        blk = tl.program_id(1)
        offs_d = blk * BLOCK_D + tl.arange(0, BLOCK_D)
        offs_n = tl.arange(0, N)
        live = offs_d < d_inner
        a = tl.load(A + offs_d[:, None] * N + offs_n[None, :], mask=live[:, None], other=0.0)
        skip = tl.load(D + offs_d, mask=live, other=0.0)
        carry = tl.zeros([BLOCK_D, N], dtype=tl.float32)   # dL/dh_t from step t + 1
        g_a = tl.zeros([BLOCK_D, N], dtype=tl.float32)
        g_d = tl.zeros([BLOCK_D], dtype=tl.float32)
        for i in range(length):
            t = length - 1 - i
            row = (b * length + t) * d_inner
            x = tl.load(u + row + offs_d, mask=live, other=0.0)
            dt = tl.load(delta + row + offs_d, mask=live, other=0.0)
            g = tl.load(gy + row + offs_d, mask=live, other=0.0)
            bt = tl.load(B + (b * length + t) * N + offs_n)
            ct = tl.load(C + (b * length + t) * N + offs_n)
            h = tl.load(states + (row + offs_d[:, None]) * N + offs_n[None, :],
                        mask=live[:, None], other=0.0)
            later = live & ((offs_d * 0 + t) > 0)   # h_{-1} = 0: nothing to read at t = 0
            prev = tl.load(states + (row - d_inner + offs_d[:, None]) * N + offs_n[None, :],
                           mask=later[:, None], other=0.0)
            decay = tl.exp(dt[:, None] * a)
            gh = carry + g[:, None] * ct[None, :]
            g_d += g * x
            g_a += gh * dt[:, None] * decay * prev
            tl.store(du + row + offs_d, tl.sum(gh * dt[:, None] * bt[None, :], axis=1) + skip * g,
                     mask=live)
            tl.store(gdelta + row + offs_d,
                     tl.sum(gh * (bt[None, :] * x[:, None] + a * decay * prev), axis=1),
                     mask=live)
            # One partial sum per channel block: blocks never write the same element.
            part = ((blk * batch + b) * length + t) * N + offs_n
            tl.store(gB + part, tl.sum(gh * (dt * x)[:, None], axis=0))
            tl.store(gC + part, tl.sum(g[:, None] * h, axis=0))
            carry = gh * decay
        tl.store(gA + ((b * d_inner + offs_d[:, None]) * N + offs_n[None, :]), g_a,
                 mask=live[:, None])
        tl.store(gD + b * d_inner + offs_d, g_d, mask=live)


BLOCK_D = 32


class _TritonScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, keep, u, delta, A, B, C, D):  # noqa: N803 - the paper's symbols
        batch, length, d_inner = u.shape
        n = A.shape[1]
        y = torch.empty_like(u)
        states = (torch.empty(batch, length, d_inner, n, device=u.device, dtype=u.dtype)
                  if keep else torch.empty(1, device=u.device, dtype=u.dtype))
        grid = (batch, triton.cdiv(d_inner, BLOCK_D))
        _forward[grid](u, delta, A, B, C, D, y, states, length, d_inner, N=n,
                       BLOCK_D=BLOCK_D, KEEP=keep)
        ctx.save_for_backward(u, delta, A, B, C, D, states)
        return y

    @staticmethod
    def backward(ctx, gy):
        u, delta, A, B, C, D, states = ctx.saved_tensors  # noqa: N806
        batch, length, d_inner = u.shape
        n = A.shape[1]
        blocks = triton.cdiv(d_inner, BLOCK_D)
        du, gdelta = torch.empty_like(u), torch.empty_like(u)
        ga = torch.empty(batch, d_inner, n, device=u.device, dtype=u.dtype)
        gd = torch.empty(batch, d_inner, device=u.device, dtype=u.dtype)
        gb = torch.empty(blocks, batch, length, n, device=u.device, dtype=u.dtype)
        gc = torch.empty_like(gb)
        _backward[(batch, blocks)](u, delta, A, B, C, D, states, gy.contiguous(), du, gdelta,
                                   ga, gd, gb, gc, length, d_inner, batch, N=n,
                                   BLOCK_D=BLOCK_D)
        return None, du, gdelta, ga.sum(0), gb.sum(0), gc.sum(0), gd.sum(0)


def selective_scan(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor,  # noqa: N803
                   B: torch.Tensor, C: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
    """:func:`hsimap.model.scan.selective_scan`'s contract, in Triton (float32; d_state a
    power of two, as Triton's block shapes must be)."""
    if triton is None:
        raise RuntimeError("the Triton scan needs triton (it comes with PyTorch's CUDA wheels)")
    n = A.shape[1]
    if n & (n - 1):
        raise ValueError(f"the Triton scan needs d_state a power of two, got {n}")
    args = [t.float().contiguous() for t in (u, delta, A, B, C, D)]
    keep = torch.is_grad_enabled() and any(t.requires_grad for t in (u, delta, A, B, C, D))
    return _TritonScan.apply(keep, *args).to(u.dtype)
