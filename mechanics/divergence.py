"""Divergence between two models' next-token distributions (torch, float64); intervals are core.stats'."""

from __future__ import annotations

import torch


def kl_rows(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """KL(p || q) of each row: [N, V] logits (any scale; normalised here) -> [N] nats, float64.

    Computed in float64 because drift between nearby models is tiny (1e-6 nats) and float32
    log-softmax differences of two 50k-way distributions are noisy at that level.
    """
    lp = torch.log_softmax(p_logits.double(), dim=-1)
    lq = torch.log_softmax(q_logits.double(), dim=-1)
    return (lp.exp() * (lp - lq)).sum(-1).clamp(min=0.0)  # clamp: rounding can give -1e-17
