"""Drift: how far a trained model's next-token distributions moved from the start model's.

KL(start || trained) (the forward KL, as in "RL's razor", Shenfeld et al. 2025: the expectation
is under the start model, which is what a sample from the old behaviour sees change), per
example the mean over its read positions, full vocabulary, temperature 1. H1 reads the ratio
of the mean off-target KL to the mean on-target (maze) KL.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd
import torch

from core.stats import mean_ci, percentile_ci, ratio_of_means_ci
from mechanics.examples import ON_TARGET, Example
from mechanics.divergence import kl_rows
from training.structure import causal_lm, decoder_of
from training.models import pad_token_id


def position_logits(model, examples: list[Example], pad_id: int = 0) -> list[torch.Tensor]:
    """Per example [len(positions), V] float32 logits of the next token at its read positions.

    Right-padded batch (causal: padding to the right changes nothing); the unembedding is
    applied only at the read positions, never to the whole sequence.
    """
    dec = decoder_of(model)
    device = next(dec.parameters()).device
    width = max(len(e.ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        ids[i, : len(e.ids)] = torch.as_tensor(e.ids)
        mask[i, : len(e.ids)] = 1
    h = dec(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False).last_hidden_state
    head = causal_lm(model).get_output_embeddings()
    return [head(h[i, list(e.positions)]).float() for i, e in enumerate(examples)]


def _batches(examples: list[Example], batch_size: int) -> Iterable[list[int]]:
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].ids))  # little padding
    for lo in range(0, len(order), batch_size):
        yield order[lo : lo + batch_size]


@torch.no_grad()
def kl_per_example(model_p, model_q, examples: list[Example], pad_id: int = 0, batch_size: int = 8) -> np.ndarray:
    """[len(examples)] mean over each example's read positions of KL(model_p || model_q), nats."""
    out = np.empty(len(examples))
    for batch in _batches(examples, batch_size):
        sub = [examples[i] for i in batch]
        for i, lp, lq in zip(batch, position_logits(model_p, sub, pad_id), position_logits(model_q, sub, pad_id)):
            out[i] = float(kl_rows(lp, lq).mean())
    return out


def kl_table(model_p, model_q, sets: dict[str, list[Example]], pad_id: int = 0, batch_size: int = 8) -> pd.DataFrame:
    """One row per example: set, id, n_positions, kl (= KL(model_p || model_q), nats)."""
    rows = []
    for name, examples in sets.items():
        kl = kl_per_example(model_p, model_q, examples, pad_id, batch_size)
        rows += [{"set": name, "id": e.id, "n_positions": len(e.positions), "kl": float(k)} for e, k in zip(examples, kl)]
    return pd.DataFrame(rows)


def drift_summary(table: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> dict:
    """Mean KL per set with CIs, the pooled off-target mean, and off/on-target ratios with CIs.

    `table`: kl_table's rows; the on-target set is named ON_TARGET. The pooled off-target KL
    weights each set equally (its per-set mean), so the largest set does not decide it;
    its ratio CI resamples examples within each set.
    """
    if ON_TARGET not in set(table["set"]):
        raise ValueError(f"the drift table has no on-target set {ON_TARGET!r}")
    on = table.loc[table["set"] == ON_TARGET, "kl"].to_numpy()
    by_set = {name: mean_ci(g["kl"].to_numpy(), n_boot, seed) for name, g in table.groupby("set", sort=False)}
    ratios = {name: ratio_of_means_ci(g["kl"].to_numpy(), on, n_boot, seed)
              for name, g in table.groupby("set", sort=False) if name != ON_TARGET}
    off_sets = [g["kl"].to_numpy() for name, g in table.groupby("set", sort=False) if name != ON_TARGET]
    pooled = _pooled_ratio(off_sets, on, n_boot, seed) if off_sets else {}
    return {"kl_direction": "KL(start || trained), nats, full vocabulary, temperature 1",
            "kl_by_set": by_set, "ratio_off_to_on_by_set": ratios, "ratio_off_to_on": pooled}


def _pooled_ratio(off_sets: list[np.ndarray], on: np.ndarray, n_boot: int, seed: int) -> dict:
    """(mean over sets of each set's mean KL) / mean on-target KL, bootstrapping every set independently."""
    rng = np.random.default_rng(seed)
    value = float(np.mean([s.mean() for s in off_sets]) / on.mean()) if on.mean() > 0 else float("nan")
    num = np.mean([s[rng.integers(0, len(s), (n_boot, len(s)))].mean(1) for s in off_sets], axis=0)
    den = on[rng.integers(0, len(on), (n_boot, len(on)))].mean(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        boots = num / den
    lo, hi = percentile_ci(boots, 0.95)
    return {"value": value, "ci_lo": lo, "ci_hi": hi, "n_sets": len(off_sets), "n_on": int(on.size)}


def drift(start, trained, tokenizer, sets: dict[str, list[Example]], batch_size: int = 8, n_boot: int = 2000, seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """(per-example table, summary) of KL(start || trained) on every set; `sets` must include the maze set."""
    table = kl_table(start, trained, sets, pad_token_id(tokenizer), batch_size)
    return table, drift_summary(table, n_boot, seed)
