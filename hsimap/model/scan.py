"""The selective scan on the CPU, fused: one pass over the sequence with the state in cache.

For each sequence b and inner channel d, with state h (d_state values, zero at the start)::

    h_t = exp(delta_t * A_d) * h_{t-1} + delta_t * B_t * u_t
    y_t = C_t . h_t + D_d * u_t

mambapy's parallel scan materialises (length x d_inner x d_state) tensors several times and
spends most of a window's time filling and multiplying them. Here the state of a block of
channels stays in a small local array while the kernel streams over time, so memory is
O(length x d_inner). The backward pass keeps the state only at chunk boundaries and recomputes
each chunk's states as it walks back in time, as mamba-ssm's CUDA kernel does.

The kernels are serial numba functions that release the GIL; parallelism comes from running
disjoint (sequence, channel block) work items on several threads. A forward result therefore
does not depend on the thread count, and nothing relies on numba's threading layer, which may
not be entered from several threads at once (dask runs windows on several threads).
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numba as nb
import numpy as np
import torch

CHUNK = 64   # time steps whose states the backward pass recomputes at once
BLOCK = 64   # inner channels per work item: the state of a block is BLOCK x d_state floats

_LOG2E = 1.4426950408889634
_LN2 = 0.6931471805599453


@nb.njit(fastmath=True, inline="always")
def _decay(dt, A, d, mantissa, exponent, exact):  # pragma: no cover - compiled  # noqa: N803
    """exp(dt * A[d, n]) = mantissa[n] * exponent_as_float32[n], for every state n.

    numba has no vector exp without Intel's SVML, and libm's scalar exp is 3x slower than this
    float32 form: exp(z) = p(r) * 2^k, r = z - k ln2 in [-ln2/2, ln2/2], p the degree-6 Taylor
    polynomial (relative error below 2e-7, float32's own rounding), 2^k written straight into a
    float's exponent bits. The caller multiplies the two parts inside its own loop: LLVM then
    vectorises both loops. ``exact`` (float64) uses libm's exp, times 2^0.
    """
    for n in range(A.shape[1]):
        if exact:
            mantissa[n] = math.exp(dt * A[d, n])
            exponent[n] = np.int32(127) << np.int32(23)
        else:
            z = max(dt * A[d, n], np.float32(-87.0))  # dt > 0, A < 0; exp(-87) is 0 in float32
            k = math.floor(z * np.float32(_LOG2E) + np.float32(0.5))
            r = z - k * np.float32(_LN2)
            p = np.float32(1.0 / 720.0)
            p = p * r + np.float32(1.0 / 120.0)
            p = p * r + np.float32(1.0 / 24.0)
            p = p * r + np.float32(1.0 / 6.0)
            p = p * r + np.float32(0.5)
            p = p * r + np.float32(1.0)
            mantissa[n] = p * r + np.float32(1.0)
            exponent[n] = (np.int32(k) + np.int32(127)) << np.int32(23)


@nb.njit(nogil=True, fastmath=True, cache=True)
def _forward_items(u, delta, A, B, C, D, y, saved, first, last,  # noqa: N803
                   exact):  # pragma: no cover - compiled
    """y for work items [first, last); item i is sequence i // blocks, channel block i % blocks.

    Shapes: u, delta, y (batch, length, d_inner); A (d_inner, d_state); B, C (batch, length,
    d_state); D (d_inner). ``saved`` (items, chunks - 1, BLOCK, d_state) receives the state
    before every chunk but the first (which starts at zero), for the backward pass; an empty
    array when no gradient is needed.
    """
    _, length, d_inner = u.shape
    n_state = A.shape[1]
    blocks = (d_inner + BLOCK - 1) // BLOCK
    h = np.zeros((BLOCK, n_state), u.dtype)
    mantissa = np.empty(n_state, u.dtype)
    exponent = np.empty(n_state, np.int32)
    pow2 = exponent.view(np.float32)
    for item in range(first, last):
        b = item // blocks
        d0 = (item % blocks) * BLOCK
        d1 = min(d0 + BLOCK, d_inner)
        h[:] = 0
        keep = saved.shape[0] > 0
        for t in range(length):
            if keep and t >= CHUNK and t % CHUNK == 0:
                saved[item, t // CHUNK - 1, : d1 - d0] = h[: d1 - d0]
            for d in range(d0, d1):
                dt = delta[b, t, d]
                x = u[b, t, d]
                _decay(dt, A, d, mantissa, exponent, exact)
                acc = D[d] * x
                for n in range(n_state):
                    hv = mantissa[n] * pow2[n] * h[d - d0, n] + dt * B[b, t, n] * x
                    h[d - d0, n] = hv
                    acc += hv * C[b, t, n]
                y[b, t, d] = acc


@nb.njit(nogil=True, fastmath=True, cache=True)
def _backward_items(u, delta, A, B, C, D, saved, gy, du, gdelta, gA, gD, gB, gC,  # noqa: N803
                    first, last, exact):  # pragma: no cover - compiled
    """Gradients for work items [first, last), from the forward pass's ``saved`` states.

    One long function on purpose: numba compiles it into one loop nest whose small buffers
    (a chunk's states and decays, the carried gradient) LLVM keeps in cache and vectorises;
    split into calls, those buffers would cross function boundaries on every step.

    du and gdelta are written per element (items own disjoint elements). gA (d_inner, d_state)
    and gD (d_inner) are this caller's partial sums; gB and gC (blocks, batch, length, d_state)
    hold one partial sum per channel block, so no two items write the same element.
    """
    _, length, d_inner = u.shape
    n_state = A.shape[1]
    blocks = (d_inner + BLOCK - 1) // BLOCK
    n_chunks = (length + CHUNK - 1) // CHUNK
    states = np.empty((CHUNK + 1, BLOCK, n_state), u.dtype)       # h_{t0-1} .. h_{t1-1}
    decays = np.empty((CHUNK, BLOCK, n_state), u.dtype)           # exp(delta_t A), same steps
    h = np.empty((BLOCK, n_state), u.dtype)
    carry = np.empty((BLOCK, n_state), u.dtype)   # dL/dh_t flowing back from step t + 1
    mantissa = np.empty(n_state, u.dtype)
    exponent = np.empty(n_state, np.int32)
    pow2 = exponent.view(np.float32)
    sum_b = np.empty(n_state, u.dtype)
    sum_c = np.empty(n_state, u.dtype)
    g_a = np.empty((BLOCK, n_state), u.dtype)   # local, so that LLVM sees no aliasing
    gh = np.empty(n_state, u.dtype)
    for item in range(first, last):
        b = item // blocks
        blk = item % blocks
        d0 = blk * BLOCK
        d1 = min(d0 + BLOCK, d_inner)
        carry[:] = 0
        g_a[:] = 0
        for c in range(n_chunks - 1, -1, -1):
            t0 = c * CHUNK
            t1 = min(t0 + CHUNK, length)
            # Recompute this chunk's states from the state saved before it.
            if c == 0:
                h[:] = 0
            else:
                h[: d1 - d0] = saved[item, c - 1, : d1 - d0]
            states[0] = h
            for t in range(t0, t1):
                for d in range(d0, d1):
                    dt = delta[b, t, d]
                    x = u[b, t, d]
                    _decay(dt, A, d, mantissa, exponent, exact)
                    for n in range(n_state):
                        decays[t - t0, d - d0, n] = mantissa[n] * pow2[n]
                    step = decays[t - t0, d - d0]
                    for n in range(n_state):
                        h[d - d0, n] = step[n] * h[d - d0, n] + dt * B[b, t, n] * x
                states[t - t0 + 1] = h
            for t in range(t1 - 1, t0 - 1, -1):
                prev = states[t - t0]        # h_{t-1}
                cur = states[t - t0 + 1]     # h_t
                decay_t = decays[t - t0]
                sum_b[:] = 0
                sum_c[:] = 0
                for d in range(d0, d1):
                    j = d - d0
                    dt = delta[b, t, d]
                    x = u[b, t, d]
                    g = gy[b, t, d]
                    decay = decay_t[j]
                    gD[d] += g * x
                    # One store per loop: LLVM vectorises loops it can prove alias-free.
                    for n in range(n_state):
                        gh[n] = carry[j, n] + g * C[b, t, n]          # dL/dh_t
                    for n in range(n_state):
                        carry[j, n] = gh[n] * decay[n]
                    for n in range(n_state):
                        sum_c[n] += g * cur[j, n]
                    for n in range(n_state):
                        sum_b[n] += gh[n] * dt * x
                    for n in range(n_state):
                        g_a[j, n] += gh[n] * dt * decay[n] * prev[j, n]
                    g_x = D[d] * g
                    g_dt = g_x - g_x
                    for n in range(n_state):
                        g_x += gh[n] * dt * B[b, t, n]
                        g_dt += gh[n] * (B[b, t, n] * x + A[d, n] * decay[n] * prev[j, n])
                    du[b, t, d] = g_x
                    gdelta[b, t, d] = g_dt
                for n in range(n_state):
                    gB[blk, b, t, n] = sum_b[n]
                    gC[blk, b, t, n] = sum_c[n]
        gA[d0:d1] += g_a[: d1 - d0]


_pool: ThreadPoolExecutor | None = None


def _run(kernel, items: int, threads: int, make_args, exact: bool) -> None:
    """Run ``kernel`` over ``items`` work items on ``threads`` threads (contiguous ranges)."""
    global _pool
    threads = max(1, min(threads, items))
    bounds = [items * i // threads for i in range(threads + 1)]
    if threads == 1:
        kernel(*make_args(0), 0, items, exact)
        return
    if _pool is None or _pool._max_workers < threads:
        _pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="hsimap-scan")
    futures = [_pool.submit(kernel, *make_args(i), bounds[i], bounds[i + 1], exact)
               for i in range(threads)]
    for f in futures:
        f.result()


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


class _SelectiveScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, keep_states, u, delta, A, B, C, D):  # noqa: N803 - the paper's symbols
        batch, _, d_inner = u.shape
        items = batch * ((d_inner + BLOCK - 1) // BLOCK)
        arrays = [_numpy(t) for t in (u, delta, A, B, C, D)]
        exact = arrays[0].dtype == np.float64
        y = np.empty_like(arrays[0])
        chunks = (u.shape[1] + CHUNK - 1) // CHUNK
        saved = np.empty((items if keep_states else 0, chunks - 1, BLOCK, A.shape[1]),
                         arrays[0].dtype)
        _run(_forward_items, items, torch.get_num_threads(),
             lambda _i: (*arrays, y, saved), exact)
        ctx.save_for_backward(u, delta, A, B, C, D, torch.from_numpy(saved))
        ctx.exact = exact
        return torch.from_numpy(y)

    @staticmethod
    def backward(ctx, gy):
        u, delta, A, B, C, D, saved = (_numpy(t) for t in ctx.saved_tensors)  # noqa: N806
        batch, length, d_inner = u.shape
        n_state = A.shape[1]
        blocks = (d_inner + BLOCK - 1) // BLOCK
        items = batch * blocks
        threads = max(1, min(torch.get_num_threads(), items))
        du, gdelta = np.empty_like(u), np.empty_like(u)
        gA = np.zeros((threads, *A.shape), u.dtype)  # noqa: N806
        gD = np.zeros((threads, d_inner), u.dtype)  # noqa: N806
        gB = np.empty((blocks, batch, length, n_state), u.dtype)  # noqa: N806
        gC = np.empty_like(gB)  # noqa: N806
        g = _numpy(gy.to(ctx.saved_tensors[0].dtype))
        _run(_backward_items, items, threads,
             lambda i: (u, delta, A, B, C, D, saved, g, du, gdelta, gA[i], gD[i], gB, gC),
             ctx.exact)
        return (None, *(torch.from_numpy(a) for a in
                        (du, gdelta, gA.sum(0), gB.sum(0), gC.sum(0), gD.sum(0))))


def selective_scan(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor,  # noqa: N803
                   B: torch.Tensor, C: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
    """Fused selective scan (CPU), differentiable in every input.

    Args:
        u: (batch, length, d_inner) input.
        delta: (batch, length, d_inner) step sizes, positive (after softplus).
        A: (d_inner, d_state) state matrix, negative (``-exp(A_log)``).
        B, C: (batch, length, d_state) input and output projections.
        D: (d_inner,) skip connection.

    Returns:
        y: (batch, length, d_inner). float32 and float64 are supported; float64 is exact to
        libm's exp and serves as the tests' reference precision.
    """
    dtype = u.dtype if u.dtype == torch.float64 else torch.float32
    args = [t.to(dtype) for t in (u, delta, A, B, C, D)]
    keep_states = torch.is_grad_enabled() and any(t.requires_grad for t in args)
    return _SelectiveScan.apply(keep_states, *args).to(u.dtype)
