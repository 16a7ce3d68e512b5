"""Advantages and losses as pure tensor functions (each checked against hand-computed values).

Shapes: episodes come as [n_groups, G] (returns) or [n_groups, G, n_moves] (per-move
quantities); log-probs over the four directions as [..., 4].
"""

from __future__ import annotations

import math

import torch


def dr_grpo_advantages(returns: torch.Tensor) -> torch.Tensor:
    """Dr. GRPO: return minus the group mean, no std normalisation. [n_groups, G] -> same."""
    return returns - returns.mean(dim=1, keepdim=True)


def grpo_advantages(returns: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """GRPO: (return - group mean) / (group std + eps), std unbiased as in the GRPO paper."""
    centred = returns - returns.mean(dim=1, keepdim=True)
    return centred / (returns.std(dim=1, keepdim=True, unbiased=True) + eps)


def returns_to_go(rewards: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """G_t = sum_{t' >= t} gamma^(t'-t) r_t' along the last axis (gamma 1 = undiscounted)."""
    if gamma == 1.0:
        return rewards.flip(-1).cumsum(-1).flip(-1)
    out = torch.empty_like(rewards)
    running = torch.zeros_like(rewards[..., 0])
    for t in range(rewards.shape[-1] - 1, -1, -1):
        running = rewards[..., t] + gamma * running
        out[..., t] = running
    return out


def reinforce_advantages(rewards: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """Token-level REINFORCE: returns-to-go minus their group mean at the same position.

    rewards [n_groups, G, n_moves] -> advantages [n_groups, G, n_moves]. gamma < 1 discounts
    later rewards; gamma 0 credits each move with its own reward only, which is the
    lowest-variance choice when, as in this maze, a move's reward arrives at once.
    """
    rtg = returns_to_go(rewards, gamma)
    return rtg - rtg.mean(dim=1, keepdim=True)


def dual_clip_objective(logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, clip_eps: float = 0.2, dual_clip: float = 3.0) -> torch.Tensor:
    """Per-token PPO dual-clip surrogate objective (to maximise).

    ratio r = exp(logp - old_logp); s = min(r A, clip(r, 1-eps, 1+eps) A); for A < 0 the
    objective is max(s, c A), which bounds how hard one very off-policy token can push.
    """
    ratio = torch.exp(logp - old_logp)
    s = torch.minimum(ratio * adv, ratio.clamp(1 - clip_eps, 1 + clip_eps) * adv)
    return torch.where(adv < 0, torch.maximum(s, dual_clip * adv), s)


def entropy(logp4: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of each distribution over the last axis."""
    return -(logp4.exp() * logp4).sum(-1)


def equalized_entropy(logp4: torch.Tensor, neighbours: torch.Tensor) -> torch.Tensor:
    """The equalized entropy of docs/study.md ("Training") at each action: [..., 4] log-probs, [..., 4] tile kinds -> [...].

    For each tile kind c held by k_c >= 2 of the four neighbours, the entropy of the policy
    restricted (renormalised) to those k_c directions; summed over kinds. It rewards
    indifference between equivalent moves, not randomness between different tiles.
    """
    out = torch.zeros(logp4.shape[:-1], dtype=logp4.dtype, device=logp4.device)
    for kind in neighbours.unique().tolist():
        member = neighbours == kind  # [..., 4]
        valid = member.sum(-1) >= 2
        masked = logp4.masked_fill(~member, float("-inf"))
        restricted = masked - torch.logsumexp(masked, dim=-1, keepdim=True)
        p = restricted.exp()
        h = -(p * restricted.masked_fill(~member, 0.0)).sum(-1)
        out = out + torch.where(valid, h, torch.zeros_like(h))
    return out


def kl_divergence(logp4: torch.Tensor, ref_logp4: torch.Tensor) -> torch.Tensor:
    """Exact KL(pi || pi_ref) over the four directions at each action."""
    return (logp4.exp() * (logp4 - ref_logp4)).sum(-1)


def cosine_factor(step: int, n_steps: int) -> float:
    """0.5 (1 + cos(pi step / n_steps)): 1 at step 0, 0 at the end; scales both LR and beta."""
    return 0.5 * (1.0 + math.cos(math.pi * min(step, n_steps) / max(n_steps, 1)))


def policy_loss(
    logp4: torch.Tensor,
    actions: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    neighbours: torch.Tensor,
    *,
    algo: str,
    norm: float,
    beta: float,
    clip_eps: float = 0.2,
    dual_clip: float = 3.0,
    ref_logp4: torch.Tensor | None = None,
    kl_coef: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss to minimise for a (micro-)batch of episodes and its parts.

    logp4 [B, T, 4]; actions, old_logp [B, T]; advantages [B] (per episode) or [B, T]
    (per token, REINFORCE); neighbours [B, T, 4]. All terms are summed over action tokens
    and divided by the constant `norm` (Dr. GRPO), so micro-batches add up exactly.
    Every episode has the same number of moves, so GRPO's per-sequence length mean is
    this same constant; `grpo` differs only in its std-normalised advantages.
    The batch tensors are built on the CPU from rollouts and follow logp4 to its device.
    """
    actions, old_logp, advantages, neighbours = (x.to(logp4.device) for x in (actions, old_logp, advantages, neighbours))
    logp = logp4.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    adv = advantages if advantages.dim() == 2 else advantages.unsqueeze(-1).expand_as(logp)
    if algo in ("dr_grpo", "grpo"):
        objective = dual_clip_objective(logp, old_logp, adv, clip_eps, dual_clip)
    elif algo == "reinforce":
        objective = logp * adv
    else:
        raise ValueError(f"unknown algo {algo!r}")
    eq_ent = equalized_entropy(logp4, neighbours)
    loss = -(objective.sum() + beta * eq_ent.sum()) / norm
    kl = torch.zeros(())
    if ref_logp4 is not None and kl_coef > 0:
        kl = kl_divergence(logp4, ref_logp4)
        loss = loss + kl_coef * kl.sum() / norm
    parts = {
        "objective": float(objective.detach().sum()),
        "equalized_entropy": float(eq_ent.detach().mean()),
        "entropy": float(entropy(logp4.detach()).mean()),
        "kl": float(kl.detach().mean()),
        "clip_frac": float(((torch.exp(logp - old_logp) - 1).abs() > clip_eps).float().mean()),
    }
    return loss, parts
