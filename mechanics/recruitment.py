"""Recruitment (H4, "reweighting, not writing"): do the trained representations live where the naive ones did?

* cos(v_k of the trained model, u_k of the naive model) per layer, for each concept vector k;
* linear CKA (Kornblith et al. 2019) between the naive and the trained model's residual stream
  at the maze action positions, per layer (probes/layers.py convention: layer l = input of block l).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from mechanics.examples import Example
from probes.capture import Span, iter_captures
from probes.metrics import cosine_per_layer


def linear_cka(x, y) -> float:
    """Linear CKA of x [n, d1] and y [n, d2] (rows: the same n inputs): ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F).

    1 for identical representations, invariant to orthogonal transforms and isotropic scaling
    of either side (not to arbitrary invertible maps). NaN if either side is constant.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"CKA needs the same inputs on both sides, got {x.shape[0]} and {y.shape[0]} rows")
    x = x - x.mean(0)
    y = y - y.mean(0)
    # The n x n Gram form is cheaper when n < d (a few hundred inputs, hidden 576).
    kx, ky = x @ x.T, y @ y.T
    den = np.sqrt((kx * kx).sum() * (ky * ky).sum())
    return float((kx * ky).sum() / den) if den > 0 else float("nan")


def vector_cosines(trained: dict[str, np.ndarray], naive: dict[str, np.ndarray]) -> pd.DataFrame:
    """Rows (vector, layer, cos) of cos(v_k, u_k) for every name k in both dicts of [L, H] arrays."""
    rows = []
    for name in sorted(set(trained) & set(naive)):
        cos = cosine_per_layer(np.asarray(trained[name]), np.asarray(naive[name]))
        rows += [{"vector": name, "layer": layer, "cos": float(c)} for layer, c in enumerate(cos)]
    if not rows:
        raise ValueError("the trained and naive vector sets share no names")
    return pd.DataFrame(rows)


def action_activations(model, examples: list[Example], layers: list[int], batch_size: int = 8, pad_id: int = 0) -> np.ndarray:
    """[n_reads, len(layers), H] residual stream at every read position of every example (example order, then position)."""
    ids, spans = [], []
    for e in examples:
        for p in e.positions:
            ids.append(list(e.ids[: p + 1]))  # causal: the prefix up to p gives the activation at p
            spans.append(Span(p, p + 1))
    out = torch.empty((len(ids), len(layers), model.config.hidden_size))
    for idx, acts in iter_captures(model, ids, spans, layers, batch_size, pad_id):
        out[idx] = acts
    return out.numpy()


def cka_per_layer(naive_acts: np.ndarray, trained_acts: np.ndarray, layers: list[int]) -> pd.DataFrame:
    """Rows (layer, cka) from two [n, len(layers), H] activation arrays of the same inputs."""
    return pd.DataFrame([{"layer": layer, "cka": linear_cka(naive_acts[:, j], trained_acts[:, j])} for j, layer in enumerate(layers)])


def recruitment_summary(cos_table: pd.DataFrame, cka_table: pd.DataFrame | None = None, n_boot: int = 2000, seed: int = 0) -> dict:
    """Mean cos(v_k, u_k) over layers 1..L-1 per vector (layer 0, the embeddings, is the same token for both
    models) with a bootstrap CI over layers; `min_mean_cos` is the lower of mold and gold; CKA per layer if given."""
    from core.stats import mean_ci

    deep = cos_table[cos_table["layer"] >= 1]
    per = {name: mean_ci(g["cos"].to_numpy(), n_boot, seed) for name, g in deep.groupby("vector")}
    pair = [per[k] for k in ("mold", "gold") if k in per]
    out = {"mean_cos_by_vector": per, "min_mean_cos": min(pair, key=lambda m: m["value"]) if pair else None,
           "space": "raw (the vectors as extracted)"}
    if cka_table is not None:
        out["cka_by_layer"] = {int(r.layer): float(r.cka) for r in cka_table.itertuples()}
    return out
