"""Per-layer separation metrics, the layer rule (l*), split-half reliability and the
shuffled-label null, in the raw, channel-standardised and whitened spaces (probes/channels.py).

* Held-out statistics: 5-fold StratifiedGroupKFold (strata: class x final direction x length; groups:
  maze seed, so no maze is on both sides); each example is projected on the class vector
  computed without its fold, both centred within the training fold's strata
  (`metrics.held_out_projections`); AUROC / |Cohen's d| / histogram overlap are class vs rest.
* Layer rule (docs/study.md, "Concept vectors"): l* = floor(mean(argmax AUROC, argmax |d|, argmin overlap)), per space,
  over layers 1..L-1 (layer 0, the read token's embedding, cannot carry the outcome).
* Split-half reliability: the mazes are split at random into two halves; per layer,
  cos(v from half A, v from half B), each half centred within its direction x length strata
  (`metrics.centre_within`). Below ~0.9 most of ||v|| is sampling noise. One split is one draw
  (on the default model the cosine moved by +-0.01 between splits), so `split_half_cos` is the
  mean over `n_splits` random splits, with their min and max; the first split's halves also
  serve claim 1's held-out layer choice (`antiparallel_split`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from envs import TILE_KINDS
from probes.channels import Spaces, top_channel_share, whitener
from probes.metrics import (choose_layer, cohens_d, cosine, cosine_per_layer, diff_of_means, held_out_projections,
                            permutation_null_cosines, separation, weighted_centred_diffs)
from probes.protocol import PROTOCOL

SPACES = Spaces.NAMES


@dataclass
class LayerChoice:
    table: pd.DataFrame  # one row per (space, layer, vector)
    l_star: dict[str, dict[str, int]]  # space -> concept -> layer
    perm_cos: dict[str, np.ndarray]  # space -> [L, draws] cos(v_mold, v_gold) with shuffled labels
    halves: dict[str, dict[str, np.ndarray]]  # "A"/"B" -> concept -> [L, H] raw vectors from that half of the mazes
    spaces: Spaces  # this model's standardisation (neutral-text SD) and whitening (within-class covariance)


def make_folds(examples: pd.DataFrame, n_folds: int, seed: int):
    """Folds stratified by class x final direction and grouped by maze (see the module docstring)."""
    from sklearn.model_selection import StratifiedGroupKFold

    labels = examples["kind"].to_numpy()
    # The scripted data are exactly balanced over final directions and lengths, dominant nuisance clusters;
    # unstratified folds then have anti-correlated train/test compositions, which on the naive
    # model gave held-out AUROC ~0.33 at every layer ("anti-learning"); stratified it is ~0.5.
    strata = np.char.add(labels.astype(str), nuisance_strata(examples))
    if np.min(np.unique(strata, return_counts=True)[1]) < 2:  # too few examples for every length: directions only
        strata = np.char.add(labels.astype(str), examples["final_direction"].astype(str).to_numpy())
    n = min(n_folds, int(np.min(np.unique(strata, return_counts=True)[1])))
    if n < 2:
        raise ValueError("too few examples per class and final direction for held-out statistics; extract with a larger -n")
    splitter = StratifiedGroupKFold(n_splits=n, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(labels)), strata, examples["maze_seed"].to_numpy()))


def maze_halves(examples: pd.DataFrame, seed: int) -> np.ndarray:
    """A boolean mask [N]: True for the examples of a random half of the mazes (half A)."""
    mazes = np.unique(examples["maze_seed"].to_numpy())
    rng = np.random.default_rng(seed + 4242)
    half_a = set(rng.permutation(mazes)[: len(mazes) // 2].tolist())
    return np.array([m in half_a for m in examples["maze_seed"].to_numpy()])


def layer_metrics(acts: np.ndarray, examples: pd.DataFrame, sd: np.ndarray, folds: int = 5, bins: int = 30,
                  perm_draws: int = 100, probe: bool = True, seed: int = 0, progress: bool = False, n_splits: int = 20) -> LayerChoice:
    """All per-layer statistics of one model's extraction activations acts [N, L, H]; sd [L, H] from neutral text."""
    from threadpoolctl import threadpool_limits
    from tqdm.auto import tqdm

    labels = examples["kind"].to_numpy()
    fold_list = make_folds(examples, folds, seed)
    # reliability splits: rows 2j and 2j+1 weight split j's halves A and B; split 0's halves are `halves`
    split_weights = np.concatenate([np.stack([m, ~m]) for m in (maze_halves(examples, seed + j) for j in range(max(1, n_splits)))]).astype(float)
    strata = nuisance_strata(examples)
    n_layers = acts.shape[1]
    rows = []
    perm = {s: np.full((n_layers, perm_draws), np.nan) for s in SPACES}
    halves = {h: {k: np.zeros((n_layers, acts.shape[2])) for k in TILE_KINDS} for h in ("A", "B")}
    spaces = Spaces(sd, np.zeros((n_layers, acts.shape[2], acts.shape[2])))
    # One BLAS thread: these are many small problems, and multi-threaded OpenBLAS on a busy
    # 2-core machine was measured 25x slower than one thread here.
    with threadpool_limits(1, user_api="blas"):
        for layer in tqdm(range(n_layers), desc="layer metrics", disable=not progress):
            raw = np.asarray(acts[:, layer, :], dtype=np.float64)
            spaces.whiten[layer] = whitener(raw, labels, strata)
            # The classes are balanced over final directions and lengths as a whole but not within a
            # random half of the mazes, and those are the largest nuisances at the read position, so
            # the halves' raw diffs of means would carry opposite imbalances (split-half cosines near
            # -1). Centring within each stratum of the half removes them; on the balanced whole it changes nothing.
            split_diffs = weighted_centred_diffs(raw, labels, strata, split_weights, TILE_KINDS)  # {k: [2 x splits, H]}
            for k in TILE_KINDS:
                halves["A"][k][layer], halves["B"][k][layer] = split_diffs[k][0], split_diffs[k][1]
            for space in SPACES:
                x = spaces.apply(raw, layer, space)
                if np.ptp(x, axis=0).max() > 0:  # layer 0 can be constant at the read position
                    perm[space][layer] = permutation_null_cosines(x, labels, "mold", "gold", perm_draws, seed + layer, strata)
                for k in TILE_KINDS:
                    v = diff_of_means(x, labels, k)
                    p = held_out_projections(x, labels, k, fold_list, strata)
                    row = {"space": space, "layer": layer, "vector": k, **_separation(p, labels == k, bins)}
                    row["d"] = cohens_d(p[labels == k], p[labels != k])  # signed; the rule uses |d|
                    row["norm"] = float(np.linalg.norm(v))
                    row["top5_share"] = float(top_channel_share(v[None])[0])
                    d = spaces.apply(split_diffs[k], layer, space)
                    split_cos = cosine_per_layer(d[0::2], d[1::2])  # one cosine per split
                    ok = np.isfinite(split_cos).any()  # layer 0 (the read token's embedding) has no class difference
                    for col, f in (("split_half_cos", np.nanmean), ("split_half_min", np.nanmin), ("split_half_max", np.nanmax)):
                        row[col] = float(f(split_cos)) if ok else float("nan")
                    if probe and space == "raw":
                        row.update(_probe(raw, labels == k, fold_list, v, seed))
                    rows.append(row)
    table = pd.DataFrame(rows)
    # Layer 0 is the embedding of the read token, the final letter alone: balanced over the classes by
    # construction, so v is ~0 there and its "separation" is a tie at chance that the rule must not pick.
    l_star = {space: {k: choose_layer(*(table[(table.space == space) & (table.vector == k)].sort_values("layer")[c].to_numpy()
                                        for c in ("auroc", "abs_d", "overlap")), first_layer=min(1, n_layers - 1)) for k in TILE_KINDS} for space in SPACES}
    return LayerChoice(table, l_star, perm, halves, spaces)


def nuisance_strata(examples: pd.DataFrame) -> np.ndarray:
    """Final direction x number of moves per example: the largest nuisances at the read position."""
    n_moves = examples["n_moves"].astype(str).to_numpy() if "n_moves" in examples else np.zeros(len(examples), str)
    return np.char.add(np.char.add(examples["final_direction"].astype(str).to_numpy(), "|"), n_moves)


def _separation(p: np.ndarray, is_class: np.ndarray, bins: int) -> dict:
    if np.ptp(p) == 0:  # a zero vector (e.g. at the embeddings): no separation at all
        return {"auroc": 0.5, "abs_d": 0.0, "overlap": 1.0}
    return separation(p, is_class, bins)


def _probe(x: np.ndarray, y: np.ndarray, folds, v: np.ndarray, seed: int) -> dict:
    """Logistic-regression probe (standardised features): held-out AUROC and cos(raw-space weights, v)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    mu, sd = x.mean(0), x.std(0) + 1e-8
    z = (x - mu) / sd
    scores = np.empty(len(y))
    for train, test in folds:
        clf = LogisticRegression(C=0.1, max_iter=500, random_state=seed).fit(z[train], y[train])
        scores[test] = clf.decision_function(z[test])
    clf = LogisticRegression(C=0.1, max_iter=500, random_state=seed).fit(z, y)
    w_raw = clf.coef_[0] / sd  # the same decision function expressed on raw activations
    return {"probe_auroc": float(roc_auc_score(y.astype(int), scores)), "probe_cos": cosine(w_raw, v)}


def antiparallel_split(halves: dict, spaces: Spaces, space: str, first_layer: int = 1) -> dict:
    """Claim 1 without selection bias: the layer of min cos(v_mold, v_gold) is chosen on half A
    of the mazes and the cosine is reported on half B (layers from `first_layer` on; layer 0,
    the embeddings, carries no class information at the read position)."""
    def cos(h):
        return cosine_per_layer(spaces.all_layers(halves[h]["mold"], space), spaces.all_layers(halves[h]["gold"], space))

    a, b = cos("A"), cos("B")
    if not np.isfinite(a[first_layer:]).any():
        return {"layer": first_layer, "cos_half_a": float("nan"), "cos_half_b": float("nan"),
                "per_layer_a": [float(x) for x in a], "per_layer_b": [float(x) for x in b]}
    layer = first_layer + int(np.nanargmin(a[first_layer:]))
    return {"layer": layer, "cos_half_a": float(a[layer]), "cos_half_b": float(b[layer]),
            "per_layer_a": [float(x) for x in a], "per_layer_b": [float(x) for x in b]}


def antiparallel_ci(acts: np.ndarray, examples: pd.DataFrame, spaces: Spaces, space: str, layer: int, mask: np.ndarray | None = None,
                    n_boot: int = 1000, seed: int = 0) -> list[float]:
    """95% percentile bootstrap CI of cos(v_mold, v_gold) at `layer` in `space`, the examples in
    `mask` (default all) resampled with replacement, each draw centred within its direction x
    length strata as the split halves are; the space's map (the whitener) stays fixed."""
    labels = examples["kind"].to_numpy()
    strata = nuisance_strata(examples)
    idx_all = np.flatnonzero(mask) if mask is not None else np.arange(len(labels))
    raw = np.asarray(acts[idx_all, layer, :], dtype=np.float64)
    labels, strata = labels[idx_all], strata[idx_all]
    rng = np.random.default_rng(seed)
    cos = np.empty(n_boot)
    for start in range(0, n_boot, 100):  # 100 draws at a time: [100, N] weights, a few MB
        counts = np.stack([np.bincount(rng.integers(0, len(labels), len(labels)), minlength=len(labels))
                           for _ in range(min(100, n_boot - start))])
        v = weighted_centred_diffs(raw, labels, strata, counts, ("mold", "gold"))
        vm, vg = (spaces.apply(v[k], layer, space) for k in ("mold", "gold"))
        cos[start : start + len(counts)] = cosine_per_layer(vm, vg)  # row-wise: one cosine per draw (NaN rows stay NaN)
    if not np.isfinite(cos).any():
        return [float("nan"), float("nan")]
    return [float(x) for x in np.nanpercentile(cos, PROTOCOL.ci_percentiles)]


def raw_layer_choice(acts: np.ndarray, examples: pd.DataFrame, folds: int = 5, bins: int = 30, seed: int = 0) -> dict[str, int]:
    """l* per class by the layer rule in raw space only (held-out AUROC, |d| and overlap, as `layer_metrics`),
    without the other spaces' whiteners: for read-outs that need only the raw l* many times."""
    labels = examples["kind"].to_numpy()
    fold_list, strata = make_folds(examples, folds, seed), nuisance_strata(examples)
    stats = {k: np.full((acts.shape[1], 3), np.nan) for k in TILE_KINDS}
    for layer in range(1, acts.shape[1]):
        x = np.asarray(acts[:, layer, :], dtype=np.float64)
        for k in TILE_KINDS:
            s = _separation(held_out_projections(x, labels, k, fold_list, strata), labels == k, bins)
            stats[k][layer] = (s["auroc"], s["abs_d"], s["overlap"])
    return {k: choose_layer(*(v[:, j] for j in range(3)), first_layer=min(1, acts.shape[1] - 1)) for k, v in stats.items()}
