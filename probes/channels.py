"""Outlier channels and channel-standardised vectors.

SmolLM2 (like most LMs) has a few residual channels whose spread is ~100x the others'. A
difference of means is then mostly those channels: raw cosines, logit lenses and
projections measure them, not the concept. Dividing each channel by its standard
deviation on neutral text (`probes.capture.channel_moments`) gives the standardised
vector v_z = v / sd, the difference of means in per-channel z-score units: what a
diagonal-covariance discriminant would use. The analyses report raw and standardised
numbers, and whitened ones (`whitener`, below), which the verdicts of claims 1 and 4 use (see
welfare_axis/claims.py and probes/analyze.py for why).
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


def whitener(x: np.ndarray, labels: np.ndarray, strata: np.ndarray | None = None) -> np.ndarray:
    """W [H, H] = Sigma^(-1/2) of the within-class (and within-stratum) covariance of x [N, H], Ledoit-Wolf shrunk.

    Why a third space: channel standardisation rescales channels but not correlated directions, and
    at the read position a few directions (spread over many channels) carry most of the variance.
    Then diffs of means under shuffled labels are nearly one-dimensional and cos(v_Mold, v_Gold) is
    about -1 for ANY labels (SmolLM2: -0.95 standardised), so no measurement could show
    antiparallelism beyond the null. In whitened space the shuffled-label null is the isotropic -0.5
    of three signal-free balanced classes, and projections become a shrunk linear discriminant.
    """
    from sklearn.covariance import LedoitWolf

    groups = labels.astype(str) if strata is None else np.char.add(labels.astype(str), strata.astype(str))
    if len(np.unique(groups)) * 3 > len(groups):  # too few examples per stratum to estimate within it: by class only
        groups = labels.astype(str)
    r = np.asarray(x, dtype=np.float64).copy()
    for g in np.unique(groups):
        m = groups == g
        r[m] -= r[m].mean(0)
    if not np.any(r):
        return np.zeros((x.shape[1], x.shape[1]))
    cov = LedoitWolf(assume_centered=True).fit(r).covariance_
    vals, vecs = np.linalg.eigh(cov)
    inv = np.where(vals > vals.max() * 1e-10, 1.0 / np.sqrt(np.maximum(vals, 1e-300)), 0.0)
    return (vecs * inv) @ vecs.T


class Spaces:
    """The three spaces a vector or an activation can be read in, per layer: raw, standardised (/ sd), whitened (@ W)."""

    NAMES = ("raw", "standardised", "whitened")

    def __init__(self, sd: np.ndarray, whiten: np.ndarray | None = None):
        self.sd = sd  # [L, H]
        self.whiten = whiten  # [L, H, H] or None

    def apply(self, x: np.ndarray, layer: int, space: str) -> np.ndarray:
        """Row vectors x [..., H] of `layer` mapped into `space` (W is symmetric, so x @ W)."""
        if space == "raw":
            return np.asarray(x, dtype=np.float64)
        if space == "standardised":
            return standardise(x, self.sd[layer])
        if space == "whitened":
            if self.whiten is None:
                raise ValueError("no whitening transform was fitted")
            return np.asarray(x, dtype=np.float64) @ self.whiten[layer]
        raise ValueError(f"unknown space {space!r}; use one of {', '.join(self.NAMES)}")

    def all_layers(self, v: np.ndarray, space: str) -> np.ndarray:
        """[L, H] per-layer vectors mapped into `space` layer by layer."""
        return np.stack([self.apply(v[layer], layer, space) for layer in range(len(v))])
