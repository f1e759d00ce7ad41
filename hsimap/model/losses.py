"""How the networks are fitted: the unmixing loss terms and the optimiser both fits share.

Loss = cross-entropy (classification only) + ``recon_weight`` x spectral angle between the
reconstruction and the input + ``sparsity_weight`` x the L1/2 quasi-norm of the abundances;
Adam with the endmember bank at its own (slower) rate, decayed stepwise ten times per run.
"""

from __future__ import annotations

import torch
from torch import nn

ENDMEMBERS = "unmixing.endmembers"


def _valid_pixels(t: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) at the valid pixels of a (B, h, w) mask ((h, w) for B = 1) -> (C, N)."""
    if valid.dim() == 2:
        return t[0][:, valid]
    return t.transpose(0, 1)[:, valid]


def sad_loss(recon: torch.Tensor, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean spectral angle between reconstruction and input over valid pixels."""
    r = _valid_pixels(recon, valid)
    y = _valid_pixels(x, valid)
    cos = (r * y).sum(0) / (r.norm(dim=0) * y.norm(dim=0) + 1e-7)
    return torch.arccos(cos.clamp(-1 + 1e-7, 1 - 1e-7)).mean()


def sparsity_loss(a: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean L_1/2 quasi-norm of the abundance vectors, (sum_p |a_p|^1/2)^2."""
    v = _valid_pixels(a, valid)
    return (v.abs() + 1e-12).sqrt().sum(0).pow(2).mean()


def make_optimizer(net: nn.Module, *, lr: float, endmember_lr: float | None, steps: int,
                   decay: float = 0.9, fused: bool = True, weight_decay: float = 0.0
                   ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.StepLR]:
    """Adam over ``net``'s parameters, the endmember bank at ``endmember_lr`` (None: frozen,
    left out), and a step decay by ``decay`` every ``steps // 10`` scheduler steps (training
    steps for the classifier, epochs for the unmixing fit).

    ``fused`` updates every parameter in one kernel instead of a dozen ops per tensor.
    ``weight_decay`` > 0: AdamW's decoupled decay, on the network's weights only (never on
    the endmember spectra, which are reflectances, not weights).
    """
    others = [q for n, q in net.named_parameters() if n != ENDMEMBERS]
    groups = [{"params": others, "lr": lr, "weight_decay": weight_decay}]
    if endmember_lr is not None:
        groups.append({"params": [net.get_parameter(ENDMEMBERS)], "lr": endmember_lr,
                       "weight_decay": 0.0})
    optim = (torch.optim.AdamW(groups, fused=fused) if weight_decay
             else torch.optim.Adam(groups, fused=fused))
    sched = torch.optim.lr_scheduler.StepLR(optim, step_size=max(1, steps // 10), gamma=decay)
    return optim, sched
