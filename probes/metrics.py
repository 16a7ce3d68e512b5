"""Vector math and separation statistics for concept vectors (numpy, no model).

* `diff_of_means`: v_k = mean(class k) - mean(all other examples pooled), unnormalised.
* Layer rule (docs/study.md, "Concept vectors"): per layer, held-out AUROC, |Cohen's d| and histogram overlap of
  projections; l* = floor(mean(argmax AUROC, argmax |d|, argmin overlap)).
* Null band: cosines between random Gaussian directions of the given norms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_auc_score


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return float(a @ b / (na * nb)) if na > 0 and nb > 0 else float("nan")


def cosine_per_layer(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two [L, H] arrays; NaN where a row is zero (layer 0, the embeddings of
    the same direction letters, gives a zero difference of means), like `cosine`."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    out = np.full(len(norms), np.nan)
    np.divide((a * b).sum(1), norms, out=out, where=norms > 0)
    return out


def diff_of_means(x: np.ndarray, labels: np.ndarray, cls) -> np.ndarray:
    """mean(x[labels == cls]) - mean(x[labels != cls]) over axis 0."""
    m = labels == cls
    if m.all() or not m.any():
        raise ValueError(f"class {cls!r} needs examples both in and out of the class")
    return x[m].mean(0) - x[~m].mean(0)


def vectors_from_sums(sums: dict[str, np.ndarray], counts: dict[str, int]) -> dict[str, np.ndarray]:
    """v_k = sums_k / n_k - (total - sums_k) / (N - n_k): the same as `diff_of_means`, from streamed sums."""
    total = sum(sums.values())
    n_total = sum(counts.values())
    out = {}
    for k, s in sums.items():
        if counts[k] == 0 or counts[k] == n_total:
            raise ValueError(f"class {k!r} needs examples both in and out of the class")
        out[k] = s / counts[k] - (total - s) / (n_total - counts[k])
    return out


def cohens_d(pos: np.ndarray, neg: np.ndarray) -> float:
    """(mean(pos) - mean(neg)) / pooled standard deviation (ddof=1)."""
    pos, neg = np.asarray(pos, dtype=np.float64), np.asarray(neg, dtype=np.float64)
    n1, n0 = len(pos), len(neg)
    if n1 < 2 or n0 < 2:
        return float("nan")
    pooled = math.sqrt(((n1 - 1) * pos.var(ddof=1) + (n0 - 1) * neg.var(ddof=1)) / (n1 + n0 - 2))
    return float((pos.mean() - neg.mean()) / pooled) if pooled > 0 else float("nan")


def histogram_overlap(pos: np.ndarray, neg: np.ndarray, bins: int = 30) -> float:
    """Sum over shared bins of min(p_pos, p_neg), each histogram normalised to sum 1 (1 = identical, 0 = disjoint)."""
    lo = min(np.min(pos), np.min(neg))
    hi = max(np.max(pos), np.max(neg))
    if hi <= lo:
        return 1.0
    edges = np.linspace(lo, hi, bins + 1)
    hp, _ = np.histogram(pos, edges)
    hn, _ = np.histogram(neg, edges)
    return float(np.minimum(hp / hp.sum(), hn / hn.sum()).sum())


def separation(proj: np.ndarray, is_class: np.ndarray, bins: int = 30) -> dict[str, float]:
    """AUROC (class vs rest), |Cohen's d| and histogram overlap of 1-D projections."""
    pos, neg = proj[is_class], proj[~is_class]
    return {
        "auroc": float(roc_auc_score(is_class.astype(int), proj)),
        "abs_d": abs(cohens_d(pos, neg)),
        "overlap": histogram_overlap(pos, neg, bins),
    }


def choose_layer(auroc: np.ndarray, abs_d: np.ndarray, overlap: np.ndarray, first_layer: int = 0) -> int:
    """l* = floor(mean(argmax AUROC, argmax |d|, argmin overlap)) over layers from `first_layer` on (first index on ties)."""
    picks = [first_layer + int(f(a[first_layer:])) for f, a in ((np.nanargmax, auroc), (np.nanargmax, abs_d), (np.nanargmin, overlap))]
    return int(math.floor(sum(picks) / 3))


@dataclass
class HeldOut:
    """Out-of-fold projections [N] per layer of one class's vector, plus per-layer metrics."""

    proj: np.ndarray  # [L, N]
    auroc: np.ndarray
    abs_d: np.ndarray
    overlap: np.ndarray

    @property
    def l_star(self) -> int:
        return choose_layer(self.auroc, self.abs_d, self.overlap)


def centre_within(x: np.ndarray, strata: np.ndarray) -> np.ndarray:
    """x [N, ...] as float64 with each stratum's mean removed (strata [N]): the nuisance-stratum
    centring used by split halves, held-out projections and tracking (see their callers for why)."""
    out = np.asarray(x, dtype=np.float64).copy()
    for g in np.unique(strata):
        m = strata == g
        out[m] -= out[m].mean(0)
    return out


def weighted_centred_diffs(x: np.ndarray, labels: np.ndarray, strata: np.ndarray, weights: np.ndarray, classes) -> dict:
    """`diff_of_means(centre_within(x[i], strata[i]), labels[i], k)` for many resamples i at once.

    x [N, H]; weights [B, N]: row b holds how often each example is in resample b (a bootstrap
    draw's counts). Both steps are linear in the resample's per-(class, stratum) sums, so each
    draw costs a [B, N] @ [N, H] product per cell instead of a copy and centring of its own
    [N, H] (on 5100 examples x 576 channels, ~40x faster). Returns {k: [B, H]}, NaN rows where
    a draw has no example of k or nothing outside it."""
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    kinds, strats = np.unique(labels), np.unique(strata)
    cells = {(c, s): m for c in kinds for s in strats if (m := (labels == c) & (strata == s)).any()}
    sums = {cs: w[:, m] @ x[m] for cs, m in cells.items()}
    counts = {cs: w[:, m].sum(1) for cs, m in cells.items()}
    # each stratum's mean over the resample (its rows of zero weight drop out)
    stratum_mean = {}
    for s in strats:
        in_s = [cs for cs in cells if cs[1] == s]
        n_s = sum(counts[cs] for cs in in_s)
        with np.errstate(invalid="ignore", divide="ignore"):
            stratum_mean[s] = np.where(n_s[:, None] > 0, sum(sums[cs] for cs in in_s) / n_s[:, None], 0.0)
    # per class: sum over its rows of (x - their stratum's mean), and its row count
    centred = {c: sum(sums[cs] - counts[cs][:, None] * stratum_mean[cs[1]] for cs in sums if cs[0] == c) for c in kinds}
    n_c = {c: sum(counts[cs] for cs in sums if cs[0] == c) for c in kinds}
    total, n_total = sum(centred.values()), sum(n_c.values())
    out = {}
    for k in classes:
        n_k = n_c.get(k, np.zeros(len(w)))
        s_k = centred.get(k, np.zeros((len(w), x.shape[1])))
        with np.errstate(invalid="ignore", divide="ignore"):
            v = s_k / n_k[:, None] - (total - s_k) / (n_total - n_k)[:, None]
        v[(n_k == 0) | (n_k == n_total)] = np.nan
        out[k] = v
    return out


def held_out_projections(x_layer: np.ndarray, labels: np.ndarray, cls, folds: list[tuple[np.ndarray, np.ndarray]],
                         strata: np.ndarray | None = None) -> np.ndarray:
    """Each example projected on the class vector computed without its fold ([N]).

    With `strata` (a nuisance label per example), train and test examples are first centred on
    the TRAINING fold's mean of their stratum (the overall training mean for a stratum the
    training fold lacks). Why: at the read position the final letter is a nuisance far larger
    than the outcome; the classes are balanced over it as a whole but not within a fold, so
    uncentred projections carry the folds' opposite imbalances (held-out AUROC below 0.5 with a
    planted class signal that every other statistic sees)."""
    proj = np.empty(len(labels), dtype=np.float64)
    for train, test in folds:
        x_train, x_test = x_layer[train], x_layer[test]
        if strata is not None:
            s_train, s_test = strata[train], strata[test]
            means = {g: x_train[s_train == g].mean(0) for g in np.unique(s_train)}
            fallback = x_train.mean(0)
            x_test = x_test.astype(np.float64, copy=True)
            for g in np.unique(s_test):
                x_test[s_test == g] -= means.get(g, fallback)
            x_train = centre_within(x_train, s_train)
        v = diff_of_means(x_train, labels[train], cls)
        proj[test] = x_test @ v
    return proj


def null_band(norm_a: np.ndarray, norm_b: np.ndarray, hidden: int, draws: int = 200, seed: int = 0, q=(2.5, 97.5)):
    """Per layer, the q-percentiles of cos between Gaussian directions scaled to norm_a / norm_b.

    (Cosine does not depend on the norms; they are applied so the null matches the recipe.)
    Returns (lo [L], hi [L], all cosines [L, draws]).
    """
    rng = np.random.default_rng(seed)
    n_layers = len(norm_a)
    cos = np.empty((n_layers, draws))
    for layer in range(n_layers):
        a = rng.standard_normal((draws, hidden))
        b = rng.standard_normal((draws, hidden))
        a *= norm_a[layer] / np.linalg.norm(a, axis=1, keepdims=True)
        b *= norm_b[layer] / np.linalg.norm(b, axis=1, keepdims=True)
        cos[layer] = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    lo, hi = np.percentile(cos, q[0], axis=1), np.percentile(cos, q[1], axis=1)
    return lo, hi, cos


def permutation_null_cosines(x_layer: np.ndarray, labels: np.ndarray, a, b, draws: int = 100, seed: int = 0,
                             strata: np.ndarray | None = None) -> np.ndarray:
    """cos(v_a, v_b) of diff-of-means vectors after shuffling the class labels ([draws]).

    The right null for this recipe: with balanced classes v_mold + v_gold + v_path = 0, so
    three classes without any signal give cos(v_a, v_b) near -0.5, not 0. With `strata`, labels
    are shuffled within each stratum, so the shuffled classes keep the data's balance over
    nuisances (a plain shuffle unbalances them, and their imbalance alone gives about -1).
    """
    from probes.nulls import diff_weights, shuffled_labels

    perms = shuffled_labels(labels, strata, draws, np.random.default_rng(seed))
    # A diff of means is a fixed linear map of x (`diff_weights`; the class sizes are the same in
    # every draw), so all draws are one [draws, N] @ [N, H] product instead of 2 x draws passes over x.
    x = np.asarray(x_layer, dtype=np.float64)
    vs = [diff_weights(perms, labels, k) @ x for k in (a, b)]
    return cosine_per_layer(*vs)  # row-wise: one cosine per draw



def cos_from_norms(norm_a: np.ndarray, norm_b: np.ndarray, norm_c: np.ndarray) -> np.ndarray:
    """cos(v_a, v_b) implied by v_a + v_b + v_c = 0 (exact for balanced classes): (|c|^2 - |a|^2 - |b|^2) / (2|a||b|)."""
    return (norm_c**2 - norm_a**2 - norm_b**2) / (2 * norm_a * norm_b)


def centred_mean_cosines(means: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Cosines between class means after subtracting their average (the 'tile-mean' cosines)."""
    names = list(means)
    centre = np.mean([means[k] for k in names], axis=0)
    c = {k: means[k] - centre for k in names}
    return {a: {b: cosine(c[a], c[b]) for b in names} for a in names}


def ols_line(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """(slope, intercept, Pearson r) of y on x."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    slope, intercept = np.polyfit(x, y, 1)
    r = float(np.corrcoef(x, y)[0, 1])
    return float(slope), float(intercept), r


def n_for_reliability(split_half_cos: float, n_per_class: float, target: float = 0.9) -> float:
    """Projected N per class at which the split-half cosine of a difference of means reaches `target`.

    With isotropic noise, each half's vector is s + e with ||e||^2 proportional to 1/N, so
    cos(half A, half B) ~ 1 / (1 + r) with the noise-to-signal ratio r = (1 - cos) / cos falling
    as 1/N: N_target = N x r / r_target. inf when the halves do not agree at all (cos <= 0).
    """
    if not 0 < target < 1:
        raise ValueError(f"target must be in (0, 1), got {target}")
    if not math.isfinite(split_half_cos) or split_half_cos <= 0:
        return math.inf
    r = (1 - split_half_cos) / split_half_cos
    return float(n_per_class * r / ((1 - target) / target))
