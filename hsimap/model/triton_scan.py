"""The selective scan as a Triton kernel: a GPU path that needs no CUDA build.

mamba-ssm's wheels are compiled against the local CUDA toolkit; Triton ships with PyTorch's CUDA
wheels and compiles its kernels when first called. On a GPU without mamba-ssm the Mamba blocks
run their channel-last form (:class:`hsimap.model.mamba.Mamba`) with this scan.

The kernel takes sequences of any lengths laid end to end, rows of several blocks' parameters at
once (:func:`packed_scan`): a cluster branch sends the sequences of all its clusters, of every
window of a batch, to the GPU as one launch, where a launch per cluster (or per window) left
most of the GPU idle. One program owns a *group* (consecutive whole sequences of one block,
:data:`GROUP_ROWS` rows or one longer sequence) and a block of channels, and keeps their state
(BLOCK_D x d_state) in registers while it walks along the rows, resetting it where a sequence
starts; the many four-token sequences of the spectral branch share programs that way. With
gradients the forward pass stores every state (rows x d_inner x d_state, float32) for the
backward pass, which walks back with them; mamba-ssm recomputes them by chunks instead, a saving
not made here. Gradients are summed in a fixed order (no atomics), so they repeat exactly.

Triton's interpreter (``TRITON_INTERPRET=1``, CPU tensors, numpy underneath) runs the same
kernels without a GPU: that is how the tests check them against the numba scan.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
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
    def _forward(u, delta, A, B, C, D, first, groups, y, states, d_inner,  # noqa: N803
                 N: tl.constexpr, BLOCK_D: tl.constexpr, KEEP: tl.constexpr):  # noqa: N803
        g = tl.program_id(0)
        start = tl.load(groups + 3 * g)
        end = tl.load(groups + 3 * g + 1)
        p = tl.load(groups + 3 * g + 2)                   # whose A and D
        offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
        offs_n = tl.arange(0, N)
        live = offs_d < d_inner
        a = tl.load(A + (p * d_inner + offs_d[:, None]) * N + offs_n[None, :],
                    mask=live[:, None], other=0.0)
        skip = tl.load(D + p * d_inner + offs_d, mask=live, other=0.0)
        h = tl.zeros([BLOCK_D, N], dtype=tl.float32)
        for t in range(start, end):
            h = h * (1 - tl.load(first + t)).to(tl.float32)   # a new sequence starts from 0
            row = t * d_inner
            x = tl.load(u + row + offs_d, mask=live, other=0.0)
            dt = tl.load(delta + row + offs_d, mask=live, other=0.0)
            bt = tl.load(B + t * N + offs_n)
            ct = tl.load(C + t * N + offs_n)
            h = tl.exp(dt[:, None] * a) * h + (dt * x)[:, None] * bt[None, :]
            if KEEP:
                tl.store(states + (row + offs_d[:, None]) * N + offs_n[None, :], h,
                         mask=live[:, None])
            tl.store(y + row + offs_d, tl.sum(h * ct[None, :], axis=1) + skip * x, mask=live)

    @triton.jit
    def _backward(u, delta, A, B, C, D, first, groups, states, gy, du, gdelta,  # noqa: N803
                  gA, gD, gB, gC, d_inner, rows,  # noqa: N803
                  N: tl.constexpr, BLOCK_D: tl.constexpr):  # noqa: N803
        g = tl.program_id(0)
        blk = tl.program_id(1)
        start = tl.load(groups + 3 * g)
        end = tl.load(groups + 3 * g + 1)
        p = tl.load(groups + 3 * g + 2)
        offs_d = blk * BLOCK_D + tl.arange(0, BLOCK_D)
        offs_n = tl.arange(0, N)
        live = offs_d < d_inner
        a = tl.load(A + (p * d_inner + offs_d[:, None]) * N + offs_n[None, :],
                    mask=live[:, None], other=0.0)
        skip = tl.load(D + p * d_inner + offs_d, mask=live, other=0.0)
        carry = tl.zeros([BLOCK_D, N], dtype=tl.float32)   # dL/dh_t from step t + 1
        g_a = tl.zeros([BLOCK_D, N], dtype=tl.float32)
        g_d = tl.zeros([BLOCK_D], dtype=tl.float32)
        for i in range(end - start):
            t = end - 1 - i
            row = t * d_inner
            f = tl.load(first + t)
            x = tl.load(u + row + offs_d, mask=live, other=0.0)
            dt = tl.load(delta + row + offs_d, mask=live, other=0.0)
            gt = tl.load(gy + row + offs_d, mask=live, other=0.0)
            bt = tl.load(B + t * N + offs_n)
            ct = tl.load(C + t * N + offs_n)
            h = tl.load(states + (row + offs_d[:, None]) * N + offs_n[None, :],
                        mask=live[:, None], other=0.0)
            later = live & ((offs_d * 0 + f) == 0)   # h before a sequence's first row is 0
            prev = tl.load(states + (row - d_inner + offs_d[:, None]) * N + offs_n[None, :],
                           mask=later[:, None], other=0.0)
            decay = tl.exp(dt[:, None] * a)
            gh = carry + gt[:, None] * ct[None, :]
            g_d += gt * x
            g_a += gh * dt[:, None] * decay * prev
            tl.store(du + row + offs_d, tl.sum(gh * dt[:, None] * bt[None, :], axis=1) + skip * gt,
                     mask=live)
            tl.store(gdelta + row + offs_d,
                     tl.sum(gh * (bt[None, :] * x[:, None] + a * decay * prev), axis=1),
                     mask=live)
            # One partial sum per channel block: programs never write the same element.
            part = (blk * rows + t) * N + offs_n
            tl.store(gB + part, tl.sum(gh * (dt * x)[:, None], axis=0))
            tl.store(gC + part, tl.sum(gt[:, None] * h, axis=0))
            carry = gh * decay * (1 - f).to(tl.float32)   # no dependence across a sequence start
        tl.store(gA + ((g * d_inner + offs_d[:, None]) * N + offs_n[None, :]), g_a,
                 mask=live[:, None])
        tl.store(gD + g * d_inner + offs_d, g_d, mask=live)


BLOCK_D = 32
GROUP_ROWS = 64   # rows a program walks at least, in whole sequences (four-token ones share)


def positions(lengths: Sequence[int] | np.ndarray) -> np.ndarray:
    """Each row's place in its sequence, for sequences of ``lengths`` laid end to end."""
    lens = np.asarray(lengths, dtype=np.int64)
    return np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens)


def layout(lengths: Sequence[Sequence[int] | np.ndarray],
           group_rows: int = GROUP_ROWS) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Where sequences start and how programs share them.

    ``lengths[p]``: the lengths of block p's sequences, laid end to end after block p - 1's.
    Returns ``first`` (rows,) int8, 1 where a sequence starts; ``groups`` (G, 3) int64, each
    program group's first row, end row and block; the number of groups of each block (groups
    are in block order, so the per-group gradients of A and D are summed per block in a
    fixed order).
    """
    firsts, groups, counts = [], [], []
    row = 0
    for p, lens in enumerate(lengths):
        lens = np.asarray(lens, dtype=np.int64)
        if (lens < 1).any():
            raise ValueError("every sequence needs at least one row")
        starts = row + np.cumsum(lens) - lens
        end = row + int(lens.sum())
        firsts.append((positions(lens) == 0).astype(np.int8))
        # A group runs from a sequence start to the first start in a later span of
        # group_rows rows: four-token sequences share a program, a long one has its own.
        span = (starts - row) // group_rows
        cuts = starts[1:][np.diff(span) > 0].tolist()
        bounds = [row, *cuts, end] if lens.size else []
        groups += [(b0, b1, p) for b0, b1 in zip(bounds[:-1], bounds[1:], strict=False)]
        counts.append(max(len(bounds) - 1, 0))
        row = end
    first = np.concatenate(firsts) if firsts else np.zeros(0, dtype=np.int8)
    return first, np.asarray(groups, dtype=np.int64).reshape(-1, 3), counts


class _PackedScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, keep, counts, u, delta, A, B, C, D, first, groups):  # noqa: N803
        rows, d_inner = u.shape
        n = A.shape[-1]
        y = torch.empty_like(u)
        states = (torch.empty(rows, d_inner, n, device=u.device, dtype=u.dtype)
                  if keep else torch.empty(1, device=u.device, dtype=u.dtype))
        if len(groups):
            grid = (len(groups), triton.cdiv(d_inner, BLOCK_D))
            _forward[grid](u, delta, A, B, C, D, first, groups, y, states, d_inner, N=n,
                           BLOCK_D=BLOCK_D, KEEP=keep)
        ctx.counts = counts
        ctx.save_for_backward(u, delta, A, B, C, D, first, groups, states)
        return y

    @staticmethod
    def backward(ctx, gy):
        u, delta, A, B, C, D, first, groups, states = ctx.saved_tensors  # noqa: N806
        rows, d_inner = u.shape
        n = A.shape[-1]
        blocks = triton.cdiv(d_inner, BLOCK_D)
        du, gdelta = torch.empty_like(u), torch.empty_like(u)
        ga = torch.zeros(len(groups), d_inner, n, device=u.device, dtype=u.dtype)
        gd = torch.zeros(len(groups), d_inner, device=u.device, dtype=u.dtype)
        gb = torch.zeros(blocks, rows, n, device=u.device, dtype=u.dtype)
        gc = torch.zeros_like(gb)
        if len(groups):
            _backward[(len(groups), blocks)](u, delta, A, B, C, D, first, groups, states,
                                             gy.contiguous(), du, gdelta, ga, gd, gb, gc,
                                             d_inner, rows, N=n, BLOCK_D=BLOCK_D)
        # Each block's A and D gradients: its groups' partial sums, in order.
        ga = torch.stack([part.sum(0) for part in ga.split(ctx.counts)])
        gd = torch.stack([part.sum(0) for part in gd.split(ctx.counts)])
        return None, None, du, gdelta, ga, gb.sum(0), gc.sum(0), gd, None, None


def packed_scan(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor,  # noqa: N803
                B: torch.Tensor, C: torch.Tensor, D: torch.Tensor,  # noqa: N803
                lengths: Sequence[Sequence[int] | np.ndarray]) -> torch.Tensor:
    """Several blocks' scans over sequences laid end to end, in one launch.

    Args:
        u, delta: (rows, d_inner); B, C: (rows, d_state).
        A: (blocks, d_inner, d_state); D: (blocks, d_inner): block p's parameters.
        lengths: ``lengths[p]`` the lengths of block p's sequences, whose rows follow block
            p - 1's; they sum to ``rows``.

    Returns y (rows, d_inner), each sequence scanned from a zero state with its block's A and D.
    Float32 inside; d_state a power of two, as Triton's block shapes must be.
    """
    if triton is None:
        raise RuntimeError("the Triton scan needs triton (it comes with PyTorch's CUDA wheels)")
    n = A.shape[-1]
    if n & (n - 1):
        raise ValueError(f"the Triton scan needs d_state a power of two, got {n}")
    first, groups, counts = layout(lengths)
    if len(first) != u.shape[0]:
        raise ValueError(f"the lengths cover {len(first)} rows, the inputs have {u.shape[0]}")
    args = [t.float().contiguous() for t in (u, delta, A, B, C, D)]
    keep = torch.is_grad_enabled() and any(t.requires_grad for t in (u, delta, A, B, C, D))
    y = _PackedScan.apply(keep, counts, *args, torch.from_numpy(first).to(u.device),
                          torch.from_numpy(groups).to(u.device))
    return y.to(u.dtype)


def selective_scan(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor,  # noqa: N803
                   B: torch.Tensor, C: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
    """:func:`hsimap.model.scan.selective_scan`'s contract ((batch, length, ...) inputs, one
    block's A (d_inner, d_state) and D (d_inner,)), as one :func:`packed_scan`."""
    batch, length, d_inner = u.shape
    n = A.shape[1]
    y = packed_scan(u.reshape(-1, d_inner), delta.reshape(-1, d_inner), A[None],
                    B.reshape(-1, n), C.reshape(-1, n), D[None], [[length] * batch])
    return y.view(batch, length, d_inner)
