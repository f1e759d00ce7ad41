"""The selective SSM block (Mamba), on the CPU or with mamba-ssm's CUDA kernels.

:class:`Mamba` takes ``mamba_ssm.Mamba``'s constructor arguments and has exactly its parameters
(``in_proj``, ``conv1d``, ``x_proj``, ``dt_proj``, ``A_log``, ``D``, ``out_proj``). On the CPU it
runs ``mambapy``'s implementation with the parallel scan (a sequential scan costs quadratic time
in backward). :func:`use_cuda_kernels` swaps every block of a model for ``mamba_ssm.Mamba``
holding the same tensors, so one model file serves both backends.

On the CPU the block runs channel-last with :func:`hsimap.model.scan.selective_scan`, a fused
numba kernel. Without gradients (prediction) it runs as two kernels between its three
projections (:meth:`Mamba._fused`); with gradients (training) as torch operations around the
scan, whose backward pass is the scan's own. On a GPU without mamba-ssm the same channel-last
form runs with :mod:`hsimap.model.triton_scan` (Triton comes with PyTorch's CUDA wheels); the
cluster branches call :meth:`Mamba.scan_inputs` and :meth:`Mamba.scan_output` themselves, to
send all their blocks' scans to the GPU as one launch.

mambapy's own forward (parallel scan) stays as the reference the tests and benchmarks compare
against: ``Mamba(..., scan="pscan")`` selects it (as mamba-ssm's
``use_fast_path`` selects its kernels, a constructor flag); ``HSIMAP_SCAN=pscan`` sets the
default of blocks built from then on, for the benchmarks' subprocesses. A GPU with neither
mamba-ssm nor Triton uses it.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from mambapy.mamba import MambaBlock, MambaConfig
from torch import nn

from hsimap.model.scan import conv_silu, gated_scan, selective_scan

SCAN_BACKENDS = ("fused", "pscan")


def scan_backend(name: str | None = None) -> str:
    """The CPU scan: ``name``, else ``HSIMAP_SCAN``, else ``fused`` (``pscan``: mambapy's, the
    reference)."""
    env = name is None
    name = os.environ.get("HSIMAP_SCAN", "fused") if env else name
    if name not in SCAN_BACKENDS:
        what = f"HSIMAP_SCAN={name!r}" if env else f"scan={name!r}"
        raise ValueError(f"{what}: expected one of {', '.join(SCAN_BACKENDS)}")
    return name


MAMBA_PARAMETERS = ("A_log", "D", "in_proj.weight", "conv1d.weight", "conv1d.bias",
                    "x_proj.weight", "dt_proj.weight", "dt_proj.bias", "out_proj.weight")


class Mamba(MambaBlock):
    """One Mamba block: (batch, length, d_model) -> (batch, length, d_model).

    Args:
        d_model: token width.
        d_state: SSM state size N.
        d_conv: width of the causal depthwise convolution.
        expand: inner width = expand * d_model.
        scan: the CPU scan, ``fused`` or ``pscan`` (default: :func:`scan_backend`).
    """

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 scan: str | None = None):
        super().__init__(MambaConfig(d_model=d_model, n_layers=1, d_state=d_state,
                                     d_conv=d_conv, expand_factor=expand, pscan=True))
        self.d_model, self.d_state, self.d_conv, self.expand = d_model, d_state, d_conv, expand
        self.scan = scan_backend(scan)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, length, d_model) -> (batch, length, d_model).

        The same computation as mambapy's (and mamba-ssm's) block, kept channel-last from end
        to end: the causal convolution is written as shifted multiply-adds so that no
        (batch, d_inner, length) transposes are copied, and the scan is the fused kernel.
        """
        if self.scan == "pscan":
            return super().forward(x)
        if x.device.type != "cpu":  # a GPU without mamba-ssm (use_cuda_kernels swaps blocks)
            # Imported here: triton costs ~100 MB of RSS, which a CPU run should not pay.
            from hsimap.model import triton_scan

            return self._channel_last(x, triton_scan.selective_scan) \
                if triton_scan.available() else super().forward(x)
        if not (torch.is_grad_enabled() and (x.requires_grad or self.A_log.requires_grad)):
            return self._fused(x)
        return self._channel_last(x, selective_scan)

    def _channel_last(self, x: torch.Tensor, scan) -> torch.Tensor:
        """The block as torch operations around ``scan`` (numba's on the CPU, Triton's on a
        GPU), differentiable through the scan's own backward pass."""
        u, delta, B, C, z = self.scan_inputs(x)                        # noqa: N806
        A, D = self.scan_weights()                                    # noqa: N806
        y = scan(u, delta, A, B, C, D)
        return self.scan_output(y, z)                                  # (batch, length, d_model)

    def scan_inputs(self, x: torch.Tensor, pos: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, ...]:
        """What the scan reads, from x (batch, length, d_model): u and delta
        (batch, length, d_inner), B and C (batch, length, d_state), and the gate z.

        With ``pos``, x is (rows, d_model): sequences laid end to end, ``pos`` (rows,) each
        row's place in its sequence, so that the causal convolution stops at a sequence's start
        (the packed GPU path, :meth:`hsimap.model.network.ClusterMamba.forward`).
        """
        n_state, rank = self.d_state, self.dt_proj.in_features
        u, z = self.in_proj(x).chunk(2, dim=-1)              # (..., length, d_inner) each
        u = F.silu(self._causal_conv(u, pos))
        dt, B, C = self.x_proj(u).split([rank, n_state, n_state], dim=-1)  # noqa: N806
        delta = F.softplus(self.dt_proj(dt))                 # (..., length, d_inner)
        return u, delta, B, C, z

    def scan_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The scan's A (d_inner, d_state) and D (d_inner,), float32: A is stored as A_log
        (mamba-ssm's parameter), A = -exp(A_log) keeps every state decaying."""
        return -torch.exp(self.A_log.float()), self.D.float()

    def scan_output(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The gated output projection of the scan's y: (..., d_inner) -> (..., d_model)."""
        return self.out_proj(y * F.silu(z))

    def _fused(self, x: torch.Tensor) -> torch.Tensor:
        """The forward without gradients: two kernels between the three projections.

        One kernel does the causal convolution and SiLU, the other ``dt_proj``, softplus, the
        scan and the ``y * silu(z)`` gate, each reading its inputs once; only ``in_proj``,
        ``x_proj`` and ``out_proj`` are matrix products.
        """
        xz = self.in_proj(x)                                  # (batch, length, 2 d_inner)
        u = conv_silu(xz, self.conv1d.weight, self.conv1d.bias)  # (batch, length, d_inner)
        dbc = self.x_proj(u.to(xz.dtype))                     # (batch, length, rank + 2 N)
        y = gated_scan(u, xz, dbc, self.dt_proj.weight, self.dt_proj.bias,
                       *self.scan_weights())
        return self.out_proj(y.to(xz.dtype))                  # (batch, length, d_model)

    def _causal_conv(self, u: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        """Depthwise causal convolution along the sequence (dim -2):
        out_t = b + sum_k w_k u_{t-K+1+k}, with u before a sequence's start (``pos``) zero."""
        w = self.conv1d.weight[:, 0, :]                      # (d_inner, d_conv)
        k = w.shape[1]
        out = torch.addcmul(self.conv1d.bias, u, w[:, k - 1])
        for shift in range(1, min(k, u.shape[-2])):
            earlier = u[..., :-shift, :]
            if pos is not None:
                earlier = earlier * (pos[shift:, None] >= shift).to(u.dtype)
            out[..., shift:, :].addcmul_(earlier, w[:, k - 1 - shift])
        return out


def cuda_kernels_available() -> bool:
    if not torch.cuda.is_available():
        return False
    try:
        import mamba_ssm  # noqa: F401
    except ImportError:
        return False
    return True


def use_cuda_kernels(model: nn.Module) -> nn.Module:
    """Replace every :class:`Mamba` in ``model`` by ``mamba_ssm.Mamba`` with the same weights.

    Call after ``model.to('cuda')``. Without mamba-ssm (the ``cuda`` extra) the model is
    returned unchanged and runs mambapy's scan on the GPU.
    """
    if not cuda_kernels_available():
        return model
    from mamba_ssm import Mamba as CudaMamba

    for name, child in list(model.named_children()):
        if isinstance(child, Mamba):
            fast = CudaMamba(d_model=child.d_model, d_state=child.d_state, d_conv=child.d_conv,
                             expand=child.expand).to(child.A_log.device)
            fast.load_state_dict(child.state_dict(), strict=True)
            setattr(model, name, fast)
        else:
            use_cuda_kernels(child)
    return model
