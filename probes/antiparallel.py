"""Claim 1 on three disjoint parts of the mazes, with structured nulls through the same layer pick.

The mazes are split at random into a whitener part (`whitener_fraction` of them), half A and
half B. Per layer of the band, v_Mold and v_Gold are differences of class means within each
half (activations centred within final letter x length strata, as everywhere); the layer of the
minimum cos(v_Mold, v_Gold) is chosen on half A and the cosine is read on half B.

Nulls go through the same pick (`probes.nulls.select_then_test`), so their p-values are
family-wise over the band:
* shuffled: labels permuted within strata (one relabelling of all examples per draw, read at
  every layer);
* covariance: class means drawn as Gaussians with each half's within-class covariance and the classes' sizes;
* isotropic: pairs of standard Gaussian directions.
The whitened space uses a whitener fit on the whitener part only. Because that part is disjoint
from both halves, a shuffle of the halves' labels keeps it fixed: the test is conditional on the
whitener part and still exact under exchangeable labels.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from probes.channels import whitener
from probes.metrics import centre_within, cosine_per_layer
from probes.nulls import covariance_class_weights, diff_weights, empirical_p, select_then_test, shuffled_labels, within_class

PAIR = ("mold", "gold")


def maze_parts(examples: pd.DataFrame, seed: int, whitener_fraction: float) -> dict[str, np.ndarray]:
    """Boolean masks {"W", "A", "B"} over examples: disjoint random sets of mazes."""
    mazes = np.unique(examples["maze_seed"].to_numpy())
    perm = np.random.default_rng([seed, 4243]).permutation(mazes)
    n_w = int(round(whitener_fraction * len(mazes)))
    rest = perm[n_w:]
    parts = {"W": perm[:n_w], "A": rest[: len(rest) // 2], "B": rest[len(rest) // 2:]}
    m = examples["maze_seed"].to_numpy()
    return {k: np.isin(m, v) for k, v in parts.items()}


def equal_n(examples: pd.DataFrame, n_per_class: int, seed: int) -> np.ndarray:
    """Row indices with at most `n_per_class` examples of each class, drawn at random (sorted)."""
    rng = np.random.default_rng([seed, 4244])
    rows = []
    for k in np.unique(examples["kind"].to_numpy()):
        idx = np.flatnonzero(examples["kind"].to_numpy() == k)
        rows.append(rng.permutation(idx)[:n_per_class])
    return np.sort(np.concatenate(rows))


def _pair_cos(x_half: np.ndarray, weights: dict[str, np.ndarray], w_map: np.ndarray | None) -> np.ndarray:
    """cos(v_mold, v_gold) per draw: weights {k: [D, N_half]} @ x_half [N_half, H], optionally whitened."""
    vs = [weights[k] @ x_half for k in PAIR]
    if w_map is not None:
        vs = [v @ w_map for v in vs]
    return cosine_per_layer(*vs)


def claim1_statistics(acts: np.ndarray, examples: pd.DataFrame, band: list[int], draws: int, seed: int,
                      whitener_fraction: float, strata: np.ndarray, progress: bool = False, spaces: tuple[str, ...] = ("raw", "whitened")) -> dict:
    """Per space (raw, whitened): half-A and half-B cosines over the band, the chosen layer, its half-B
    cosine, and per null family the same select-then-test statistic with its p-value (one-sided, low)."""
    from tqdm.auto import tqdm

    labels = examples["kind"].to_numpy()
    parts = maze_parts(examples, seed, whitener_fraction)
    rng = np.random.default_rng([seed, 4245])
    perms = shuffled_labels(labels, strata, draws, rng)
    halves = {}
    for h in ("A", "B"):
        m = parts[h]
        real = {k: diff_weights(labels[m][None], labels[m], k) for k in PAIR}
        shuf = {k: diff_weights(perms[:, m], labels[m], k) for k in PAIR}
        cov = covariance_class_weights(labels[m], PAIR, draws, rng)
        halves[h] = (m, real, shuf, cov)
    cos = {s: {h: {f: np.full((1 if f == "real" else draws, len(band)), np.nan) for f in ("real", "shuffled", "covariance")}
               for h in ("A", "B")} for s in spaces}
    for j, layer in enumerate(tqdm(band, desc="claim 1 nulls", disable=not progress)):
        x = np.asarray(acts[:, layer, :], dtype=np.float64)
        wm = parts["W"]
        w_map = whitener(x[wm], labels[wm], strata[wm]) if wm.any() and "whitened" in spaces else None
        for h, (m, real, shuf, cov) in halves.items():
            xc = centre_within(x[m], strata[m])
            noise = centre_within(x[m], within_class(labels[m], strata[m]))  # the covariance null draws from the noise around the class means
            for s in spaces:
                mp = w_map if s == "whitened" else None
                if s == "whitened" and mp is None:
                    continue
                for f, wts, xs in (("real", real, xc), ("shuffled", shuf, xc), ("covariance", cov, noise)):
                    cos[s][h][f][:, j] = _pair_cos(xs, wts, mp)
    iso = _isotropic_pair_cos(draws, len(band), acts.shape[2], seed)
    return {s: _select_and_test(cos[s], iso, band) for s in spaces}


def _isotropic_pair_cos(draws: int, n_band: int, hidden: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([seed, 4246])
    out = {}
    for h in ("A", "B"):
        a, b = rng.standard_normal((2, draws, n_band, hidden))
        out[h] = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    return out


def _select_and_test(cos: dict, iso: dict, band: list[int]) -> dict:
    idx, val = select_then_test(cos["A"]["real"][0], cos["B"]["real"][0], "less")
    if idx < 0:
        return {"layer": None, "cos_half_a": float("nan"), "cos_half_b": float("nan"), "nulls": {}}
    out = {"layer": int(band[idx]), "cos_half_a": float(cos["A"]["real"][0, idx]), "cos_half_b": float(val),
           "band": [int(band[0]), int(band[-1])],
           "per_layer_a": [float(v) for v in cos["A"]["real"][0]], "per_layer_b": [float(v) for v in cos["B"]["real"][0]],
           "nulls": {}}
    families = {"shuffled": (cos["A"]["shuffled"], cos["B"]["shuffled"]), "covariance": (cos["A"]["covariance"], cos["B"]["covariance"]),
                "isotropic": (iso["A"], iso["B"])}
    for name, (a, b) in families.items():
        _, null = select_then_test(a, b, "less")
        out["nulls"][name] = {"p": empirical_p(float(val), null, "less"), "q2_5": float(np.nanpercentile(null, 2.5)),
                              "median": float(np.nanmedian(null)), "draws": int(np.isfinite(null).sum())}
    return out


def half_b_at(stats: dict, layer: int) -> float:
    """The half-B cosine of a `claim1_statistics` space entry at `layer` (NaN outside its band)."""
    lo, hi = stats.get("band") or (None, None)
    if lo is None or not lo <= layer <= hi:
        return float("nan")
    return float(stats["per_layer_b"][layer - lo])


def claim1_reads(acts: np.ndarray, examples: pd.DataFrame, c_acts: np.ndarray, c_examples: pd.DataFrame, strata_fn, band: list[int],
                 draws: int, whitener_fraction: float, seed: int, progress: bool = False) -> dict:
    """Claim 1 for the trained model and the naive control at equal N per class (the naive examples
    subsampled), each with its own parts and whitener; the naive half-B cosine is read at the trained
    model's chosen layer."""
    n = int(examples["kind"].value_counts().min())
    idx = equal_n(c_examples, n, seed)
    c_ex = c_examples.iloc[idx].reset_index(drop=True)
    trained = claim1_statistics(acts, examples, band, draws, seed, whitener_fraction, strata_fn(examples), progress)
    naive = claim1_statistics(np.asarray(c_acts[idx]), c_ex, band, draws, seed, whitener_fraction, strata_fn(c_ex), progress)
    for space, t in trained.items():
        t["naive_at_layer"] = half_b_at(naive[space], t["layer"]) if t.get("layer") is not None else float("nan")
    return {"trained": trained, "naive": naive, "n_per_class": n, "band": [band[0], band[-1]], "draws": draws,
            "parts": f"mazes split at random: {whitener_fraction:.2f} for the whitener, the rest into halves A (layer) and B (read)"}
