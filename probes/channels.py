"""Outlier channels and channel-standardised vectors.

SmolLM2 (like most LMs) has a few residual channels whose spread is ~100x the others'. A
difference of means is then mostly those channels: raw cosines, logit lenses and
projections measure them, not the concept. Dividing each channel by its standard
deviation on neutral text (`probes.capture.channel_moments`) gives the standardised
vector v_z = v / sd, the difference of means in per-channel z-score units: what a
diagonal-covariance discriminant would use. The analyses report raw and standardised
numbers; the verdicts use the standardised ones (see welfare_axis/claims.py).
"""

from __future__ import annotations

import numpy as np


def standardise(v: np.ndarray, sd: np.ndarray, floor: float = 1e-6) -> np.ndarray:
    """v / sd per channel ([..., H] / [H] or [L, H] / [L, H]); channels with (near) zero spread are zeroed."""
    sd = np.asarray(sd, dtype=np.float64)
    scale = np.where(sd > floor, 1.0 / np.maximum(sd, floor), 0.0)
    return np.asarray(v, dtype=np.float64) * scale


def top_channel_share(v: np.ndarray, k: int = 5) -> np.ndarray:
    """Per row of v [L, H], the share of ||v||^2 in its k largest channels (1 = all of it)."""
    sq = np.asarray(v, dtype=np.float64) ** 2
    total = sq.sum(-1)
    top = np.sort(sq, axis=-1)[..., -k:].sum(-1)
    return np.where(total > 0, top / np.where(total > 0, total, 1.0), np.nan)


def top_channels(v: np.ndarray, k: int = 5) -> list[list[int]]:
    """Per row of v [L, H], the indices of its k largest |channels|, largest first."""
    return [list(map(int, np.argsort(-np.abs(row))[:k])) for row in np.asarray(v)]
