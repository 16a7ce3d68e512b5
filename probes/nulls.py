"""Null directions that look like the thing tested, and family-wise p-values over a layer band.

Three families of null directions, each a stack [draws, L, H] over layers:

* ``shuffled``: differences of class means after shuffling the class labels (within nuisance
  strata, so the shuffled classes keep the data's balance); one relabelling per draw, applied at
  every layer, as a real difference of means is one labelling read at every layer.
* ``covariance``: Gaussian directions with the layer's covariance of the activations: a random
  Gaussian combination of the centred examples (one combination per draw, at every layer).
  Difference-of-means directions lie along the high-variance channels; isotropic ones do not.
* ``isotropic``: standard Gaussian directions, independent per layer.

Where the data picks a layer, every null draw goes through the same pick: `max_over_band`
standardises each layer by the family's spread there, takes the maximum over the band for the
observed direction and for every draw, and gives the family-wise p-value of the observed maximum
(`select_then_test` does the same for a layer picked on one split and read on another).
"""

from __future__ import annotations

import numpy as np

FAMILIES = ("shuffled", "covariance", "isotropic")


def shuffled_labels(labels: np.ndarray, strata: np.ndarray | None, draws: int, rng: np.random.Generator) -> np.ndarray:
    """[draws, N] relabellings, each a permutation of `labels` within every stratum."""
    groups = [np.arange(len(labels))] if strata is None else [np.flatnonzero(strata == s) for s in np.unique(strata)]
    perms = np.empty((draws, len(labels)), dtype=labels.dtype)
    for i in range(draws):
        perm = labels.copy()
        for g in groups:
            perm[g] = labels[g][rng.permutation(len(g))]
        perms[i] = perm
    return perms


def diff_weights(perms: np.ndarray, labels: np.ndarray, k) -> np.ndarray:
    """[draws, N] weights whose product with x [N, H] is mean(class k) - mean(rest) under each relabelling."""
    n_k = int((labels == k).sum())
    if n_k in (0, len(labels)):
        raise ValueError(f"class {k!r} needs examples both in and out of the class")
    return np.where(perms == k, 1.0 / n_k, -1.0 / (len(labels) - n_k))


def shuffled_diffs(acts: np.ndarray, labels: np.ndarray, strata: np.ndarray | None, classes, draws: int, seed: int,
                   layers: list[int] | None = None) -> dict:
    """{k: [draws, L_sel, H]} differences of means of class k vs the rest under shuffled labels (acts [N, L, H])."""
    rng = np.random.default_rng([seed, 1])
    perms = shuffled_labels(np.asarray(labels), strata, draws, rng)
    layers = list(range(acts.shape[1])) if layers is None else list(layers)
    out = {}
    for k in classes:
        w = diff_weights(perms, np.asarray(labels), k)
        out[k] = np.stack([w @ np.asarray(acts[:, layer, :], dtype=np.float64) for layer in layers], axis=1)
    return out


def covariance_directions(acts: np.ndarray, draws: int, seed: int, layers: list[int] | None = None,
                          strata: np.ndarray | None = None) -> np.ndarray:
    """[draws, L_sel, H] Gaussian directions with each layer's covariance of acts [N, L, H] (centred within `strata`)."""
    from probes.metrics import centre_within

    rng = np.random.default_rng([seed, 2])
    w = rng.standard_normal((draws, acts.shape[0])) / np.sqrt(max(acts.shape[0] - 1, 1))
    layers = list(range(acts.shape[1])) if layers is None else list(layers)
    out = []
    for layer in layers:
        x = np.asarray(acts[:, layer, :], dtype=np.float64)
        x = centre_within(x, strata) if strata is not None else x - x.mean(0)
        out.append(w @ x)
    return np.stack(out, axis=1)


def covariance_class_weights(labels: np.ndarray, classes, draws: int, rng: np.random.Generator) -> dict:
    """{k: [draws, N]} weights whose product with centred x [N, H] gives mean(k) - mean(rest) for Gaussian
    class means m_c ~ N(0, Sigma / n_c) (Sigma: the covariance of x, n_c: the class's size): the
    covariance-shaped null of a difference of means, keeping the recipe's coupling between classes."""
    n = len(labels)
    counts = {c: int((labels == c).sum()) for c in np.unique(labels)}
    mean_w = {c: rng.standard_normal((draws, n)) / np.sqrt(max(n - 1, 1)) / np.sqrt(n_c) for c, n_c in counts.items()}
    out = {}
    for k in classes:
        rest = sum(counts[c] * mean_w[c] for c in counts if c != k) / (n - counts[k])
        out[k] = mean_w[k] - rest
    return out


def within_class(labels: np.ndarray, strata: np.ndarray) -> np.ndarray:
    """Class x stratum cells: centring within them removes the between-class signal, so a covariance-shaped
    null direction is drawn from the noise around the class means, not from the signal it is tested against."""
    return np.char.add(np.char.add(np.asarray(labels).astype(str), "|"), np.asarray(strata).astype(str))


def isotropic_directions(draws: int, n_layers: int, hidden: int, seed: int) -> np.ndarray:
    """[draws, L, H] standard Gaussian directions, independent per layer."""
    return np.random.default_rng([seed, 3]).standard_normal((draws, n_layers, hidden))


def unit(x: np.ndarray) -> np.ndarray:
    """Rows (last axis) scaled to unit norm; zero rows stay zero."""
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, x / n, 0.0)


def _oriented(x: np.ndarray, side: str) -> np.ndarray:
    if side not in ("greater", "less"):
        raise ValueError(f"side must be 'greater' or 'less', got {side!r}")
    return x if side == "greater" else -x


def empirical_p(observed: float, null: np.ndarray, side: str = "greater") -> float:
    """(1 + #draws at least as extreme) / (1 + #draws), one-sided; NaN draws are dropped."""
    null = np.asarray(null, dtype=float)
    null = null[np.isfinite(null)]
    if not np.isfinite(observed) or len(null) == 0:
        return float("nan")
    o, n = _oriented(np.array([observed]), side)[0], _oriented(null, side)
    return float((1 + np.sum(n >= o)) / (1 + len(n)))


def max_over_band(observed: np.ndarray, null: np.ndarray, side: str = "greater") -> dict:
    """Family-wise test of a statistic read at every layer of a band.

    observed [L]; null [draws, L] (the same statistic for each null direction). Each layer is
    standardised by the null's mean and SD there (z); the observed maximum z (minimum for
    side "less") is compared with each draw's own maximum over the band. Returns the selected
    band index, its z, the family-wise p and the 95th percentile of the null maxima."""
    observed, null = np.asarray(observed, dtype=float), np.asarray(null, dtype=float)
    mu, sd = np.nanmean(null, 0), np.nanstd(null, 0, ddof=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        z_obs = _oriented((observed - mu) / sd, side)
        z_null = _oriented((null - mu) / sd, side)
    if not np.isfinite(z_obs).any():
        return {"index": None, "z": float("nan"), "p": float("nan"), "null_max_q95": float("nan"), "z_per_layer": []}
    idx = int(np.nanargmax(z_obs))
    null_max = np.nanmax(np.where(np.isfinite(z_null), z_null, -np.inf), axis=1)
    z = float(z_obs[idx])
    sign = 1.0 if side == "greater" else -1.0
    return {"index": idx, "z": sign * z, "p": empirical_p(z, null_max, "greater"),
            "null_max_q95": sign * float(np.percentile(null_max, 95)),
            "z_per_layer": [float(sign * v) for v in z_obs]}


def select_then_test(select: np.ndarray, read: np.ndarray, side: str = "less") -> tuple[np.ndarray, np.ndarray]:
    """The layer that is most extreme on `select` and the value of `read` there, row by row.

    select, read [..., L] (one row per draw, or a single row); side "less" picks the minimum.
    Returns (index [...], value [...]); rows with no finite value give index -1 and NaN."""
    s = _oriented(np.asarray(select, dtype=float), side)
    s = np.where(np.isfinite(s), s, -np.inf)
    idx = np.argmax(s, axis=-1)
    val = np.take_along_axis(np.asarray(read, dtype=float), idx[..., None], axis=-1)[..., 0]
    bad = ~np.isfinite(s).any(axis=-1) | np.all(s == -np.inf, axis=-1)
    return np.where(bad, -1, idx), np.where(bad, np.nan, val)
