"""Clustering tokens: per-endmember token budgets and abundance-ordered Top-K sequences."""

from __future__ import annotations

import math

import torch


def token_budgets(abundances: torch.Tensor, *, ratio: float = 0.1, min_tokens: int = 100,
                  mass_weight: float = 0.3, area_weight: float = 0.7,
                  threshold: float = 0.5) -> list[int]:
    """How many tokens each cluster (endmember) gets in one window.

    score_p = 0.3 * (mass share of p) + 0.7 * (active-area share of p), where the mass is
    sum of A_p and the active area counts pixels with A_p > 0.5 max A_p;
    n_p = ceil(0.1 * N * score_p), at least 100, at most N (N = valid pixels in the window).

    Args:
        abundances: (P, N) abundances of the window's valid pixels.

    Returns:
        P token counts.
    """
    p, n = abundances.shape
    a = abundances.detach()
    mass = a.sum(dim=1)
    area = (a > threshold * a.amax(dim=1, keepdim=True)).sum(dim=1).to(a.dtype)
    score = (mass_weight * mass / mass.sum().clamp_min(1e-8)
             + area_weight * area / area.sum().clamp_min(1e-8))
    return [min(n, max(min_tokens, math.ceil(ratio * n * float(s)))) for s in score]


def cluster_sequences(abundances: torch.Tensor, budgets: list[int]) -> list[torch.Tensor]:
    """Cluster p's sequence: its n_p pixels of largest A_p, ordered by A_p descending.

    Ties are broken by pixel index (a stable sort), so the order is deterministic.
    """
    a = abundances.detach()
    out = []
    for p, k in enumerate(budgets):
        order = torch.sort(a[p], descending=True, stable=True).indices
        out.append(order[:k])
    return out


def unselected(n: int, sequences: list[torch.Tensor]) -> torch.Tensor:
    """Pixels in no cluster's sequence, in raster (index) order."""
    mask = torch.ones(n, dtype=torch.bool)
    for s in sequences:
        mask[s.cpu()] = False
    return torch.nonzero(mask).squeeze(1)
