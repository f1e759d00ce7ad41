"""Which number format the heavy layers compute in, and the layers that honour it.

A CPU with AVX512-BF16 or AMX, and a GPU, multiplies bfloat16 matrices several times faster
than float32 ones (an AMD EPYC with AVX512-BF16: 465 against 80-106 GFLOP/s on one core).
``bf16`` runs the convolutions (3 x 3, and the 1 x 1 ones as matrix products) in bfloat16,
accumulating in float32 and returning float32; everything else (the Mamba blocks with their
scan, softmax, batch norm, the unmixing reconstruction) stays float32. The Mamba projections
stay float32 on purpose: their row count is a sequence length, different in every window, and
oneDNN builds and caches a bfloat16 kernel per shape: +450 MB of peak RSS on a 512 x 512
scene for 3% of speed (measured with 2 workers). ``auto`` is ``bf16`` where the hardware has
such units, ``fp32`` elsewhere.

The choice is an attribute of the network's modules (:func:`set_precision`), not a global
or a context variable: dask runs windows on threads of its own, which would not see either.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hsimap.runtime import check_precision

_ATTR = "_hsimap_compute_dtype"


def bf16_hardware(device: torch.device | str = "cpu") -> bool:
    """True where bfloat16 matrix products are fast: AVX512-BF16 or AMX on a CPU, any CUDA
    GPU that supports bfloat16."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    cpu = torch.cpu
    try:
        return bool(cpu._is_avx512_bf16_supported() or cpu._is_amx_tile_supported())
    except AttributeError:  # an older torch without the probes: say no, stay exact
        return False


def resolve_precision(name: str, device: torch.device | str = "cpu") -> str:
    """``fp32`` or ``bf16``: ``name``, with ``auto`` decided by :func:`bf16_hardware`."""
    check_precision(name)
    if name == "auto":
        return "bf16" if bf16_hardware(device) else "fp32"
    return name


def set_precision(model: nn.Module, name: str) -> nn.Module:
    """Make every layer of ``model`` compute in ``name`` (``fp32`` or ``bf16``)."""
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[name]
    for m in model.modules():
        setattr(m, _ATTR, dtype)
    return model


def precision_of(model: nn.Module) -> str:
    return "bf16" if compute_dtype(model) == torch.bfloat16 else "fp32"


def compute_dtype(module: nn.Module) -> torch.dtype:
    return getattr(module, _ATTR, torch.float32)


def _low(t: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    return None if t is None else t.to(dtype)


def pointwise(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A 1 x 1 convolution, (B, C, h, w) -> (B, O, h, w), as the matrix product it is.

    ``weight`` (O, C) or (O, C, 1, 1). torch sends a 1 x 1 ``conv2d`` on the CPU to its slow
    reference loop (``_slow_conv2d_forward``); a batched matmul reaches the BLAS.
    """
    b, c, h, w = x.shape
    # bmm with the weight expanded over the batch: matmul((O, C), (B, C, N)) transposes both
    # sides into a copy first (2.2x slower at (128, 128) x (1, 128, 4096)).
    wt = weight.reshape(weight.shape[0], c).expand(b, -1, -1)
    xs = x.reshape(b, c, h * w)
    if dtype != torch.float32 and x.dtype != torch.float64:
        y = torch.bmm(wt.to(dtype), xs.to(dtype)).to(x.dtype)
    elif bias is not None:
        return torch.baddbmm(bias[None, :, None], wt, xs).view(b, -1, h, w)
    else:
        y = torch.bmm(wt, xs)
    if bias is not None:
        y = y + bias[:, None]
    return y.view(b, -1, h, w)


def conv(x: torch.Tensor, layer: nn.Conv2d) -> torch.Tensor:
    """``layer(x)`` in the layer's precision (1 x 1 kernels as :func:`pointwise`)."""
    dtype = compute_dtype(layer)
    if layer.kernel_size == (1, 1) and layer.groups == 1:
        return pointwise(x, layer.weight, layer.bias, dtype)
    if dtype == torch.float32 or x.dtype == torch.float64:
        return layer(x)
    low = x.to(dtype)
    if layer.padding_mode != "zeros":
        low = F.pad(low, layer._reversed_padding_repeated_twice, mode=layer.padding_mode)
    y = F.conv2d(low, layer.weight.to(dtype), _low(layer.bias, dtype),
                 layer.stride, 0 if layer.padding_mode != "zeros" else layer.padding,
                 layer.dilation, layer.groups)
    return y.to(x.dtype)


def sequential(layers: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """``layers(x)`` with every ``Conv2d`` through :func:`conv`."""
    for layer in layers:
        x = conv(x, layer) if isinstance(layer, nn.Conv2d) else layer(x)
    return x
