"""Update anatomy (H3 depth, H4 low rank): what the weight delta between two models looks like.

Per weight matrix of the two state dicts (start, trained; a LoRA adapter is compared merged,
so its delta is scale * B A up to float32 rounding): the relative change ||dW|| / ||W||,
update sparsity (share of entries with |dW| <= tol, in float32, at several tolerances),
the entropy effective rank of dW (Roy & Vetterli 2007) and the principal angles between the
top-k singular subspaces of W before and after (meaningful where the k-th singular value is
separated from the (k+1)-th; within a near-degenerate spectrum the subspace is not defined
sharply and any small delta can rotate it). Per layer: the relative change of the whole
block, and `depth_spread`, the effective number of layers carrying the update over L.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import numpy as np
import pandas as pd
import torch

from training.structure import block_index

DEFAULT_TOLERANCES = (0.0, 1e-7, 1e-6, 1e-5)


def relative_change(w0: torch.Tensor, w1: torch.Tensor) -> float:
    """||w1 - w0||_F / ||w0||_F (inf when w0 is zero and w1 is not; 0 for two zero tensors)."""
    d = float((w1.double() - w0.double()).norm())
    n = float(w0.double().norm())
    return d / n if n > 0 else (0.0 if d == 0 else math.inf)


def sparsity(delta: torch.Tensor, tolerances=DEFAULT_TOLERANCES) -> dict[float, float]:
    """{tol: share of entries with |delta| <= tol}; delta is cast to float32 first (the training precision question)."""
    a = delta.float().abs()
    return {float(t): float((a <= t).float().mean()) for t in tolerances}


def effective_rank(matrix_or_singular_values: torch.Tensor) -> float:
    """Entropy effective rank exp(H(p)), p_i = s_i / sum s (Roy & Vetterli 2007); 0 for a zero matrix.

    Accepts a matrix [m, n] or its singular values [k]. A rank-r matrix with equal singular
    values has effective rank r; unequal ones give less.
    """
    x = matrix_or_singular_values.double()
    s = torch.linalg.svdvals(x) if x.dim() == 2 else x.abs()
    total = float(s.sum())
    if total == 0:
        return 0.0
    p = s[s > 0] / total
    return float(torch.exp(-(p * p.log()).sum()))


def principal_angles(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Principal angles (radians, ascending) between the column spaces of a [n, k1] and b [n, k2]: min(k1, k2) angles."""
    qa, _ = torch.linalg.qr(a.double())
    qb, _ = torch.linalg.qr(b.double())
    cos = torch.linalg.svdvals(qa.T @ qb).clamp(-1.0, 1.0)
    return torch.arccos(cos).sort().values


def top_singular_vectors(w: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(left [m, k], right [n, k]) top-k singular vectors of w [m, n], float64.

    From the eigenvectors of the smaller Gram matrix (min(m, n) squared) rather than a full SVD:
    over a hundred times faster than a float64 SVD with vectors of an MLP block on 2 cores. The
    Gram squares the condition number, which only blurs the smallest singular directions, not the top k.
    """
    w = w.double()
    transpose = w.shape[0] > w.shape[1]
    a = w.T if transpose else w  # [small, large]
    evals, evecs = torch.linalg.eigh(a @ a.T)  # ascending
    small = evecs[:, -k:].flip(-1)
    s = evals[-k:].flip(-1).clamp(min=0).sqrt()
    large = (a.T @ small) / s.clamp(min=torch.finfo(torch.float64).tiny)
    return (large, small) if transpose else (small, large)


def top_subspace_rotation(w0: torch.Tensor, w1: torch.Tensor, k: int = 8) -> dict[str, float]:
    """Largest principal angle (degrees) between the top-k left, and right, singular subspaces of w0 and w1."""
    k = min(k, *w0.shape)
    u0, v0 = top_singular_vectors(w0, k)
    u1, v1 = top_singular_vectors(w1, k)
    left = principal_angles(u0, u1)
    right = principal_angles(v0, v1)
    return {"left_max_deg": float(left.max().rad2deg()), "right_max_deg": float(right.max().rad2deg())}


def depth_spread(layer_mass, trainable: int | None = None) -> float:
    """Effective number of layers carrying the update, over the number training could change: exp(H(p)) / n,
    p = mass share per layer, n = `trainable` (LoRA on the top k blocks: k) or every layer.

    1 when every trainable layer carries the same mass, 1/n when one layer carries all of it; without `trainable`,
    an update confined to k of L blocks by construction could never exceed k/L.
    """
    m = np.asarray(layer_mass, dtype=float)
    if m.size == 0 or m.sum() <= 0:
        return float("nan")
    p = m[m > 0] / m.sum()
    return float(np.exp(-(p * np.log(p)).sum()) / (trainable or m.size))


@contextmanager
def one_thread():
    """Run LAPACK (eigh, svdvals) on one thread: with two OpenMP threads on 2 shared cores a small eigh
    is over a hundred times slower (the threads spin waiting for each other)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def matrix_table(start: dict[str, torch.Tensor], trained: dict[str, torch.Tensor], top_k: int = 8,
                 tolerances=DEFAULT_TOLERANCES, svd_max_dim: int = 8192) -> pd.DataFrame:
    """One row per weight tensor present in both state dicts: name, layer, shape, norms, relative change, sparsity.

    2-D tensors whose sides are at most `svd_max_dim` (not the embeddings) also get the effective
    rank of the delta (and its ratio to the full rank min(m, n)) and the top-k subspace rotation.
    """
    missing = sorted(set(start) ^ set(trained))
    if missing:
        raise ValueError(f"the two models have different parameters (e.g. {missing[0]}); compare models of one architecture")
    rows = []
    for name, w0 in start.items():
        w1 = trained[name]
        if w0.shape != w1.shape:
            raise ValueError(f"{name}: shapes differ ({tuple(w0.shape)} vs {tuple(w1.shape)})")
        delta = w1.float() - w0.float()
        row = {"name": name, "layer": block_index(name), "shape": "x".join(map(str, w0.shape)), "numel": w0.numel(),
               "norm": float(w0.double().norm()), "delta_norm": float(delta.double().norm()),
               "relative_change": relative_change(w0, w1)}
        row.update({f"sparsity@{t:g}": v for t, v in sparsity(delta, tolerances).items()})
        if w0.dim() == 2 and max(w0.shape) <= svd_max_dim:
            with one_thread():
                er = effective_rank(torch.linalg.svdvals(delta))  # float32 svdvals: 3x faster than float64, ample for an entropy
                rotation = top_subspace_rotation(w0, w1, top_k)
            row.update({"effective_rank": er, "effective_rank_fraction": er / min(w0.shape), **rotation})
        rows.append(row)
    return pd.DataFrame(rows)


def anatomy_summary(table: pd.DataFrame, low_rank_by_construction: bool = False, trainable_blocks: int | None = None) -> dict:
    """Per layer relative change; depth spread; sparsity; overall relative change; the median effective-rank
    fraction over changed matrices. `low_rank_test` (what H4 reads) is that median, or None when the delta
    is low-rank by construction (a LoRA adapter), where it would test the adapter's r, not training."""
    blocks = table.dropna(subset=["layer"]).assign(layer=lambda d: d["layer"].astype(int))
    per_layer = blocks.groupby("layer").apply(
        lambda g: pd.Series({"delta_sq": float((g["delta_norm"] ** 2).sum()), "norm_sq": float((g["norm"] ** 2).sum())}),
        include_groups=False)
    per_layer["relative_change"] = np.sqrt(per_layer["delta_sq"] / per_layer["norm_sq"])
    sparsity_cols = [c for c in table.columns if c.startswith("sparsity@")]
    total = table["numel"].sum()
    changed = table[table["delta_norm"] > 0]  # untrained matrices (frozen, or outside LoRA's targets) say nothing about rank
    er = changed["effective_rank_fraction"].dropna() if "effective_rank_fraction" in table else pd.Series(dtype=float)
    out = {
        "relative_change": float(np.sqrt((table["delta_norm"] ** 2).sum() / (table["norm"] ** 2).sum())),
        "relative_change_by_layer": {int(k): float(v) for k, v in per_layer["relative_change"].items()},
        "depth_spread": depth_spread(per_layer["delta_sq"].to_numpy(), trainable_blocks),
        "trainable_blocks": trainable_blocks or int(len(per_layer)),
        "sparsity": {c.split("@", 1)[1]: float((table[c] * table["numel"]).sum() / total) for c in sparsity_cols},
        "median_effective_rank_fraction": float(er.median()) if len(er) else float("nan"),
        "median_effective_rank": float(changed["effective_rank"].median()) if "effective_rank" in table else float("nan"),
        "n_changed_matrices": int(len(changed)),
    }
    out["low_rank_test"] = None if low_rank_by_construction else out["median_effective_rank_fraction"]
    return out


def state_dict_float32(model) -> dict[str, torch.Tensor]:
    """The model's parameters as float32 CPU tensors, tied weights once (by name)."""
    return {n: p.detach().float().cpu() for n, p in model.named_parameters()}
