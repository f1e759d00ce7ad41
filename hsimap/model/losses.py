"""How the networks are fitted: the unmixing loss terms and the optimiser both fits share.

Loss = cross-entropy (classification only) + ``recon_weight`` x spectral angle between the
reconstruction and the input + ``sparsity_weight`` x the L1/2 quasi-norm of the abundances;
Adam with the endmember bank at its own (slower) rate, decayed stepwise ten times per run.
"""

from __future__ import annotations

import torch
from torch import nn

ENDMEMBERS = "unmixing.endmembers"


def sad_loss(recon: torch.Tensor, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean spectral angle between reconstruction and input over valid pixels."""
    r = recon[0][:, valid]
    y = x[0][:, valid]
    cos = (r * y).sum(0) / (r.norm(dim=0) * y.norm(dim=0) + 1e-7)
    return torch.arccos(cos.clamp(-1 + 1e-7, 1 - 1e-7)).mean()


def sparsity_loss(a: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean L_1/2 quasi-norm of the abundance vectors, (sum_p |a_p|^1/2)^2."""
    v = a[0][:, valid]
    return (v.abs() + 1e-12).sqrt().sum(0).pow(2).mean()


def make_optimizer(net: nn.Module, *, lr: float, endmember_lr: float | None, epochs: int,
                   decay: float = 0.9, fused: bool = True
                   ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.StepLR]:
    """Adam over ``net``'s parameters, the endmember bank at ``endmember_lr`` (None: frozen,
    left out), and a step decay by ``decay`` every ``epochs // 10`` epochs.

    ``fused`` updates every parameter in one kernel instead of a dozen ops per tensor.
    """
    others = [q for n, q in net.named_parameters() if n != ENDMEMBERS]
    groups = [{"params": others, "lr": lr}]
    if endmember_lr is not None:
        groups.append({"params": [net.get_parameter(ENDMEMBERS)], "lr": endmember_lr})
    optim = torch.optim.Adam(groups, fused=fused)
    sched = torch.optim.lr_scheduler.StepLR(optim, step_size=max(1, epochs // 10), gamma=decay)
    return optim, sched
