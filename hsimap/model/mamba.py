"""The selective SSM block (Mamba), on the CPU or with mamba-ssm's CUDA kernels.

:class:`Mamba` takes ``mamba_ssm.Mamba``'s constructor arguments and has exactly its parameters
(``in_proj``, ``conv1d``, ``x_proj``, ``dt_proj``, ``A_log``, ``D``, ``out_proj``). On the CPU it
runs ``mambapy``'s implementation with the parallel scan (a sequential scan costs quadratic time
in backward). :func:`use_cuda_kernels` swaps every block of a model for ``mamba_ssm.Mamba``
holding the same tensors, so one model file serves both backends.
"""

from __future__ import annotations

import torch
from mambapy.mamba import MambaBlock, MambaConfig
from torch import nn

MAMBA_PARAMETERS = ("A_log", "D", "in_proj.weight", "conv1d.weight", "conv1d.bias",
                    "x_proj.weight", "dt_proj.weight", "dt_proj.bias", "out_proj.weight")


class Mamba(MambaBlock):
    """One Mamba block: (batch, length, d_model) -> (batch, length, d_model).

    Args:
        d_model: token width.
        d_state: SSM state size N.
        d_conv: width of the causal depthwise convolution.
        expand: inner width = expand * d_model.
    """

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2):
        super().__init__(MambaConfig(d_model=d_model, n_layers=1, d_state=d_state,
                                     d_conv=d_conv, expand_factor=expand, pscan=True))
        self.d_model, self.d_state, self.d_conv, self.expand = d_model, d_state, d_conv, expand


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
