"""The selective scan on the CPU, fused: one pass over the sequence with the state in cache.

For each sequence b and inner channel d, with state h (d_state values, zero at the start)::

    h_t = exp(delta_t * A_d) * h_{t-1} + delta_t * B_t * u_t
    y_t = C_t . h_t + D_d * u_t

mambapy's parallel scan materialises (length x d_inner x d_state) tensors several times and
spends most of a window's time filling and multiplying them. Here the state of a block of
channels stays in a small local array while the kernel streams over time, so memory is
O(length x d_inner). The backward pass keeps the state only at chunk boundaries and recomputes
each chunk's states as it walks back in time, as mamba-ssm's CUDA kernel does.

For prediction (no gradients) the Mamba block runs as two kernels of this module between its
projections: :func:`conv_silu` (causal depthwise convolution and SiLU) and :func:`gated_scan`
(``dt_proj``, softplus, the scan and the ``y * silu(z)`` gate), each reading its inputs once.

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
def _exp32(v):  # pragma: no cover - compiled
    """exp(v) for float32 v in [-87, 88], as two parts: p(r) and the bits of 2^k.

    The one float32 exp of every kernel here. numba has no vector exp without Intel's SVML, and
    libm's scalar exp is 3x slower: exp(v) = p(r) * 2^k, r = v - k ln2 in [-ln2/2, ln2/2], p the
    degree-6 Taylor polynomial (relative error below 2e-7, float32's own rounding), 2^k written
    straight into a float's exponent bits. Callers store the two parts in one loop and multiply
    them (the bits viewed as float32) in a second: LLVM vectorises both. (Written as a loop
    inside an inlined function instead, the forward scan ran 2x slower.)
    """
    k = np.floor(v * np.float32(_LOG2E) + np.float32(0.5))   # float32, not math.floor's int64
    r = v - k * np.float32(_LN2)
    p = np.float32(1.0 / 720.0)
    p = p * r + np.float32(1.0 / 120.0)
    p = p * r + np.float32(1.0 / 24.0)
    p = p * r + np.float32(1.0 / 6.0)
    p = p * r + np.float32(0.5)
    p = p * r + np.float32(1.0)
    p = p * r + np.float32(1.0)
    return p, (np.int32(k) + np.int32(127)) << np.int32(23)


@nb.njit(fastmath=True, inline="always")
def _step(h, dl, x, At, d0, n, B, C, D, acc, dx, e, bits, exact):  # pragma: no cover  # noqa: N803
    """One time step for channels d0 .. d0 + n: h (d_state, BLOCK) advances, acc = y_t.

    The loops run along channels, 16 of them per AVX-512 register, with no reduction across
    lanes: y_t accumulates state by state in ``acc``. (Along the state instead, every channel
    ends in a horizontal sum of 16 lanes; that form ran 2x slower.)
    """
    pw = bits.view(np.float32)
    for i in range(n):
        acc[i] = D[d0 + i] * x[i]
        dx[i] = dl[i] * x[i]
    for s in range(At.shape[0]):
        a_s = At[s, d0:d0 + n]
        if exact:
            for i in range(n):
                e[i] = math.exp(dl[i] * a_s[i])
        else:
            for i in range(n):
                m, bits[i] = _exp32(max(dl[i] * a_s[i], np.float32(-87.0)))
                e[i] = m
            for i in range(n):
                e[i] *= pw[i]
        bs, cs = B[s], C[s]
        hs = h[s]
        for i in range(n):
            hv = e[i] * hs[i] + dx[i] * bs
            hs[i] = hv
            acc[i] += hv * cs


@nb.njit(nogil=True, fastmath=True, cache=True)
def _forward_items(u, delta, At, B, C, D, y, saved, first, last,  # noqa: N803
                   exact):  # pragma: no cover - compiled
    """y for work items [first, last); item i is sequence i // blocks, channel block i % blocks.

    Shapes: u, delta, y (batch, length, d_inner); At (d_state, d_inner), A transposed; B, C
    (batch, length, d_state); D (d_inner). ``saved`` (items, chunks - 1, d_state, BLOCK)
    receives the state before every chunk but the first (which starts at zero), for the
    backward pass; an empty array when no gradient is needed.
    """
    _, length, d_inner = u.shape
    n_state = At.shape[0]
    blocks = (d_inner + BLOCK - 1) // BLOCK
    h = np.zeros((n_state, BLOCK), u.dtype)
    acc = np.empty(BLOCK, u.dtype)
    dx = np.empty(BLOCK, u.dtype)
    e = np.empty(BLOCK, u.dtype)
    bits = np.zeros(BLOCK, np.int32)
    keep = saved.shape[0] > 0
    for item in range(first, last):
        b = item // blocks
        d0 = (item % blocks) * BLOCK
        n = min(d0 + BLOCK, d_inner) - d0
        h[:] = 0
        for t in range(length):
            if keep and t >= CHUNK and t % CHUNK == 0:
                saved[item, t // CHUNK - 1, :, :n] = h[:, :n]
            _step(h, delta[b, t, d0:d0 + n], u[b, t, d0:d0 + n], At, d0, n, B[b, t], C[b, t],
                  D, acc, dx, e, bits, exact)
            out = y[b, t, d0:d0 + n]
            for i in range(n):
                out[i] = acc[i]


@nb.njit(nogil=True, fastmath=True, cache=True)
def _backward_items(u, delta, At, B, C, D, saved, gy, du, gdelta, gA, gD, gB, gC,  # noqa: N803
                    first, last, exact):  # pragma: no cover - compiled
    """Gradients for work items [first, last), from the forward pass's ``saved`` states.

    As the forward step, every loop runs along the block's channels; what is summed over
    channels (dB, dC) is summed once per state and step, not once per channel and step as
    the state-wise form did (2x-3x slower). Each loop stores into one array: LLVM vectorises
    loops it can prove alias-free. One long function on purpose: numba compiles it into one
    loop nest whose small buffers stay in cache.

    Shapes as :func:`_forward_items` (At is A transposed). du and gdelta are written per
    element (items own disjoint elements). gA (d_inner, d_state) and gD (d_inner) are this
    caller's partial sums; gB and gC (blocks, batch, length, d_state) hold one partial sum
    per channel block, so no two items write the same element.
    """
    _, length, d_inner = u.shape
    n_state = At.shape[0]
    blocks = (d_inner + BLOCK - 1) // BLOCK
    n_chunks = (length + CHUNK - 1) // CHUNK
    states = np.empty((CHUNK + 1, n_state, BLOCK), u.dtype)   # h_{t0-1} .. h_{t1-1}
    decays = np.empty((CHUNK, n_state, BLOCK), u.dtype)       # exp(delta_t A), same steps
    h = np.empty((n_state, BLOCK), u.dtype)
    carry = np.empty((n_state, BLOCK), u.dtype)   # dL/dh_t flowing back from step t + 1
    g_a = np.empty((n_state, BLOCK), u.dtype)
    g_d = np.empty(BLOCK, u.dtype)
    gh = np.empty(BLOCK, u.dtype)
    gx = np.empty(BLOCK, u.dtype)
    gdt = np.empty(BLOCK, u.dtype)
    dx = np.empty(BLOCK, u.dtype)
    e = np.empty(BLOCK, u.dtype)
    bits = np.zeros(BLOCK, np.int32)
    pw = bits.view(np.float32)
    for item in range(first, last):
        b = item // blocks
        blk = item % blocks
        d0 = blk * BLOCK
        n = min(d0 + BLOCK, d_inner) - d0
        carry[:] = 0
        g_a[:] = 0
        g_d[:] = 0
        for c in range(n_chunks - 1, -1, -1):
            t0 = c * CHUNK
            t1 = min(t0 + CHUNK, length)
            # Recompute this chunk's states from the state saved before it.
            if c == 0:
                h[:] = 0
            else:
                h[:, :n] = saved[item, c - 1, :, :n]
            states[0] = h
            for t in range(t0, t1):
                dl = delta[b, t, d0:d0 + n]
                x = u[b, t, d0:d0 + n]
                for i in range(n):
                    dx[i] = dl[i] * x[i]
                for s in range(n_state):
                    a_s = At[s, d0:d0 + n]
                    dec = decays[t - t0, s]
                    if exact:
                        for i in range(n):
                            dec[i] = math.exp(dl[i] * a_s[i])
                    else:
                        for i in range(n):
                            m, bits[i] = _exp32(max(dl[i] * a_s[i], np.float32(-87.0)))
                            e[i] = m
                        for i in range(n):
                            dec[i] = e[i] * pw[i]
                    bs = B[b, t, s]
                    hs = h[s]
                    for i in range(n):
                        hs[i] = dec[i] * hs[i] + dx[i] * bs
                states[t - t0 + 1] = h
            for t in range(t1 - 1, t0 - 1, -1):
                dl = delta[b, t, d0:d0 + n]
                x = u[b, t, d0:d0 + n]
                g = gy[b, t, d0:d0 + n]
                dd = D[d0:d0 + n]
                for i in range(n):
                    dx[i] = dl[i] * x[i]
                for i in range(n):
                    g_d[i] += g[i] * x[i]
                for i in range(n):
                    gx[i] = dd[i] * g[i]
                for i in range(n):
                    gdt[i] = 0
                for s in range(n_state):
                    prev = states[t - t0, s]       # h_{t-1}
                    cur = states[t - t0 + 1, s]    # h_t
                    dec = decays[t - t0, s]
                    a_s = At[s, d0:d0 + n]
                    bs, cs = B[b, t, s], C[b, t, s]
                    cy = carry[s]
                    for i in range(n):
                        gh[i] = cy[i] + g[i] * cs                 # dL/dh_t
                    for i in range(n):
                        cy[i] = gh[i] * dec[i]
                    sum_c = g[0] * cur[0] - g[0] * cur[0]
                    for i in range(n):
                        sum_c += g[i] * cur[i]
                    sum_b = sum_c - sum_c
                    for i in range(n):
                        sum_b += gh[i] * dx[i]
                    ga = g_a[s]
                    for i in range(n):
                        ga[i] += gh[i] * dl[i] * dec[i] * prev[i]
                    for i in range(n):
                        gx[i] += gh[i] * dl[i] * bs
                    for i in range(n):
                        gdt[i] += gh[i] * (bs * x[i] + a_s[i] * dec[i] * prev[i])
                    gB[blk, b, t, s] = sum_b
                    gC[blk, b, t, s] = sum_c
                out_x = du[b, t, d0:d0 + n]
                out_dt = gdelta[b, t, d0:d0 + n]
                for i in range(n):
                    out_x[i] = gx[i]
                for i in range(n):
                    out_dt[i] = gdt[i]
        gA[d0:d0 + n] += g_a[:, :n].T
        gD[d0:d0 + n] += g_d[:n]


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
        arrays = [_numpy(t) for t in (u, delta, A.t(), B, C, D)]
        exact = arrays[0].dtype == np.float64
        y = np.empty_like(arrays[0])
        chunks = (u.shape[1] + CHUNK - 1) // CHUNK
        saved = np.empty((items if keep_states else 0, chunks - 1, A.shape[1], BLOCK),
                         arrays[0].dtype)
        _run(_forward_items, items, torch.get_num_threads(),
             lambda _i: (*arrays, y, saved), exact)
        ctx.save_for_backward(u, delta, A, B, C, D, torch.from_numpy(saved))
        ctx.exact = exact
        return torch.from_numpy(y)

    @staticmethod
    def backward(ctx, gy):
        u, delta, A, B, C, D, saved = (_numpy(t) for t in ctx.saved_tensors)  # noqa: N806
        At = np.ascontiguousarray(A.T)  # noqa: N806
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
             lambda i: (u, delta, At, B, C, D, saved, g, du, gdelta, gA[i], gD[i], gB, gC),
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


# --- The block's forward without gradients: two kernels around the three projections. -------


@nb.njit(fastmath=True, inline="always")
def _exp(z, out, bits, n, exact):  # pragma: no cover - compiled
    """out[:n] = exp(z[:n]) (float32: :func:`_exp32`; float64: libm's)."""
    if exact:
        for i in range(n):
            out[i] = math.exp(z[i])
        return
    for i in range(n):
        m, bits[i] = _exp32(min(max(z[i], np.float32(-87.0)), np.float32(88.0)))
        out[i] = m
    scale = bits.view(np.float32)
    for i in range(n):
        out[i] *= scale[i]


@nb.njit(fastmath=True, inline="always")
def _silu(x, out, tmp, bits, n, exact):  # pragma: no cover - compiled
    """out[:n] = x / (1 + exp(-x))."""
    for i in range(n):
        tmp[i] = -x[i]
    _exp(tmp, tmp, bits, n, exact)
    for i in range(n):
        out[i] = x[i] / (tmp[i] + 1)


@nb.njit(nogil=True, fastmath=True, cache=True, error_model="numpy")
def _conv_silu_items(xz, w, bias, out, first, last, exact):  # pragma: no cover - compiled
    """out = silu(causal depthwise convolution of u), u = xz[..., :d_inner], for work items
    [first, last) (sequence, channel block) as in :func:`_forward_items`.

    w (d_conv, d_inner) is the convolution's weight transposed, so that the loops over channels
    read memory in order; out_t = bias + sum_j w[j] u_{t - d_conv + 1 + j}.
    """
    _, length, d_inner = out.shape
    k = w.shape[0]
    blocks = (d_inner + BLOCK - 1) // BLOCK
    acc = np.empty(BLOCK, out.dtype)
    tmp = np.empty(BLOCK, out.dtype)
    bits = np.empty(BLOCK, np.int32)
    for item in range(first, last):
        b = item // blocks
        d0 = (item % blocks) * BLOCK
        n = min(d0 + BLOCK, d_inner) - d0
        for t in range(length):
            for i in range(n):
                acc[i] = bias[d0 + i]
            for j in range(max(0, k - 1 - t), k):
                # Slices, not offset indices: numba then knows every index is in bounds and
                # LLVM vectorises the loop (with d0 + i it checks each index for wraparound).
                wj = w[j, d0:d0 + n]
                xs = xz[b, t - k + 1 + j, d0:d0 + n]
                for i in range(n):
                    acc[i] += wj[i] * xs[i]
            _silu(acc, out[b, t, d0:d0 + n], tmp, bits, n, exact)


@nb.njit(fastmath=True, inline="always")
def _softplus(x, out, tmp, bits, n, exact):  # pragma: no cover - compiled
    """out[:n] = log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)) (x itself above 20, as torch);
    ``out`` may be ``x``; ``tmp`` and ``bits`` are scratch.

    log1p(e), e in (0, 1], is 2 atanh(s) with s = e / (2 + e) <= 1/3: the odd series to s^13
    leaves a relative error below 2e-8. float64: libm's exp and log1p.
    """
    if exact:
        for i in range(n):
            out[i] = x[i] if x[i] > 20 else max(x[i], 0.0) + math.log1p(math.exp(-abs(x[i])))
        return
    pw = bits.view(np.float32)
    for i in range(n):
        m, bits[i] = _exp32(max(-abs(x[i]), np.float32(-87.0)))
        tmp[i] = m
    for i in range(n):
        e = tmp[i] * pw[i]
        s = e / (e + np.float32(2.0))
        s2 = s * s
        p = np.float32(1.0 / 13.0)
        p = p * s2 + np.float32(1.0 / 11.0)
        p = p * s2 + np.float32(1.0 / 9.0)
        p = p * s2 + np.float32(1.0 / 7.0)
        p = p * s2 + np.float32(1.0 / 5.0)
        p = p * s2 + np.float32(1.0 / 3.0)
        p = p * s2 + np.float32(1.0)
        v = max(x[i], np.float32(0.0)) + np.float32(2.0) * s * p
        out[i] = x[i] if x[i] > np.float32(20.0) else v


# error_model="numpy": without it numba checks every division for a zero divisor, and a
# loop with a check does not vectorise (measured: 1.5 against 0.1 ns per element).
@nb.njit(nogil=True, fastmath=True, cache=True, error_model="numpy")
def _block_items(u, xz, dbc, w_dt, b_dt, At, B, C, D, y, first, last,  # noqa: N803
                 exact):  # pragma: no cover - compiled
    """y = scan(u, delta, A, B, C, D) * silu(z) for work items [first, last).

    delta = softplus(dt_proj(dt)) is made per step for the block's channels, from dt =
    dbc[..., :rank], w_dt (rank, d_inner) (dt_proj's weight transposed) and b_dt; B and C
    (batch, length, d_state) are dbc's next columns, copied contiguous; z = xz[..., d_inner:].
    The state update is :func:`_step`'s.
    """
    _, length, d_inner = u.shape
    n_state = At.shape[0]
    rank = w_dt.shape[0]
    blocks = (d_inner + BLOCK - 1) // BLOCK
    h = np.zeros((n_state, BLOCK), u.dtype)
    acc = np.empty(BLOCK, u.dtype)
    dx = np.empty(BLOCK, u.dtype)
    e = np.empty(BLOCK, u.dtype)
    delta = np.empty(BLOCK, u.dtype)
    bits = np.zeros(BLOCK, np.int32)
    pw = bits.view(np.float32)
    for item in range(first, last):
        b = item // blocks
        d0 = (item % blocks) * BLOCK
        n = min(d0 + BLOCK, d_inner) - d0
        h[:] = 0
        for t in range(length):
            bias = b_dt[d0:d0 + n]
            for i in range(n):
                delta[i] = bias[i]
            for r in range(rank):
                v = dbc[b, t, r]
                wr = w_dt[r, d0:d0 + n]
                for i in range(n):
                    delta[i] += v * wr[i]
            _softplus(delta, delta, e, bits, n, exact)
            _step(h, delta, u[b, t, d0:d0 + n], At, d0, n, B[b, t], C[b, t], D, acc, dx, e,
                  bits, exact)
            z = xz[b, t, d_inner + d0:d_inner + d0 + n]
            out = y[b, t, d0:d0 + n]
            if exact:
                for i in range(n):
                    out[i] = acc[i] * z[i] / (1.0 + math.exp(-z[i]))
            else:
                for i in range(n):
                    m, bits[i] = _exp32(min(max(-z[i], np.float32(-87.0)), np.float32(88.0)))
                    e[i] = m
                for i in range(n):
                    out[i] = acc[i] * z[i] / (e[i] * pw[i] + np.float32(1.0))


def _items(batch: int, d_inner: int) -> int:
    return batch * ((d_inner + BLOCK - 1) // BLOCK)


def conv_silu(xz: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """silu(causal depthwise conv1d(u)), u the first half of ``xz`` (batch, length, 2 d_inner);
    ``weight`` (d_inner, 1, d_conv) and ``bias`` as ``nn.Conv1d`` holds them. No gradient."""
    batch, length, two = xz.shape
    d_inner = two // 2
    dtype = np.float64 if xz.dtype == torch.float64 else np.float32
    a = xz.detach().to(torch.float64 if dtype == np.float64 else torch.float32).contiguous()
    arrays = (a.numpy(), weight.detach()[:, 0, :].t().to(a.dtype).contiguous().numpy(),
              bias.detach().to(a.dtype).contiguous().numpy())
    out = np.empty((batch, length, d_inner), dtype)
    with torch.profiler.record_function("hsimap::conv_silu"):  # numba: invisible otherwise
        _run(_conv_silu_items, _items(batch, d_inner), torch.get_num_threads(),
             lambda _i: (*arrays, out), dtype == np.float64)
    return torch.from_numpy(out)


def gated_scan(u: torch.Tensor, xz: torch.Tensor, dbc: torch.Tensor, dt_weight: torch.Tensor,
               dt_bias: torch.Tensor, A: torch.Tensor, D: torch.Tensor) -> torch.Tensor:  # noqa: N803
    """selective_scan(u, softplus(dt_proj(dt)), A, B, C, D) * silu(z), in one kernel, no
    gradient.

    Args:
        u: (batch, length, d_inner), the convolution's output after SiLU.
        xz: (batch, length, 2 d_inner), ``in_proj``'s output (z is its second half).
        dbc: (batch, length, rank + 2 d_state), ``x_proj``'s output: dt, B, C.
        dt_weight, dt_bias: ``dt_proj``'s (d_inner, rank) and (d_inner,).
        A: (d_inner, d_state), ``-exp(A_log)``. D: (d_inner,).
    """
    dtype = torch.float64 if u.dtype == torch.float64 else torch.float32
    n_state, d_inner = A.shape[1], u.shape[2]
    B, C = dbc[..., -2 * n_state:].split(n_state, dim=-1)  # noqa: N806
    arrays = [t.detach().to(dtype).contiguous().numpy() for t in
              (u, xz, dbc, dt_weight.t(), dt_bias, A.t(), B, C, D)]
    y = np.empty_like(arrays[0])
    with torch.profiler.record_function("hsimap::gated_scan"):
        _run(_block_items, _items(u.shape[0], d_inner), torch.get_num_threads(),
             lambda _i: (*arrays, y), dtype == torch.float64)
    return torch.from_numpy(y)
