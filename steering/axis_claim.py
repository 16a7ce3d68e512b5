"""Claim 5's primary test: does steering the maze-naive model along one welfare axis raise sentiment?

The axis is unit(v_Gold) - unit(v_Mold) (the trained model's vectors; v_Gold and v_Mold are nearly
antiparallel, so testing each would count one test twice). The statistic is the derivative of the
teacher-forced sentiment log-odds per unit alpha (steering/logodds.py), averaged over every
sentiment prompt and continuation pair, at every layer of the protocol's band. Null directions
(probes/nulls.py) come from the trained model's extraction activations: shuffled-label
differences Gold - Mold, Gaussian directions with the layer's covariance, and isotropic ones.
Each family gives a family-wise p for the maximum z over the band (`probes.nulls.max_over_band`).
The selected layer is where the axis's smallest z over the families is largest; there its z must
also clear every family's 95th percentile of null maxima (so one layer beats every family, not each
family at a layer of its own), and a finite step of +-alpha checks the sign (the mean log-odds
change per prompt, a t interval over prompts: a linearity check on the same prompts).
The valence direction from emotion stories is the positive control and goes through the same test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from probes import nulls
from probes.protocol import PROTOCOL, Protocol


def welfare_axis(vectors, band: list[int]) -> np.ndarray:
    """[len(band), H] float64: unit(v_Gold) - unit(v_Mold) at each band layer (ConceptVectors `vectors`)."""
    return np.stack([nulls.unit(vectors.get("gold", l).double().numpy()) - nulls.unit(vectors.get("mold", l).double().numpy()) for l in band])


def null_directions(acts: np.ndarray, examples: pd.DataFrame, band: list[int], draws: int, seed: int) -> dict[str, np.ndarray]:
    """{family: [draws, len(band), H]} null directions for the axis, from extraction activations acts [N, L, H]."""
    from probes.layer_choice import nuisance_strata

    labels, strata = examples["kind"].to_numpy(), nuisance_strata(examples)
    shuf = nulls.shuffled_diffs(acts, labels, strata, ("gold", "mold"), draws, seed, band)
    return {"shuffled": nulls.unit(shuf["gold"]) - nulls.unit(shuf["mold"]),
            "covariance": nulls.covariance_directions(acts, draws, seed, band, nulls.within_class(labels, strata)),
            "isotropic": nulls.isotropic_directions(draws, len(band), acts.shape[2], seed)}


def against_nulls(effect: np.ndarray, null_effects: dict[str, np.ndarray], band: list[int]) -> dict:
    """effect [L_band] (mean log-odds derivative) against each family's [draws, L_band]: z per layer, family-wise p."""
    out = {"effect_per_layer": [float(x) for x in effect], "nulls": {}}
    for name, ne in null_effects.items():
        res = nulls.max_over_band(effect, ne, "greater")
        out["nulls"][name] = {"p": res["p"], "z_max": res["z"], "layer_of_max": band[res["index"]] if res["index"] is not None else None,
                              "null_max_q95": res["null_max_q95"], "z_per_layer": res["z_per_layer"], "draws": int(ne.shape[0])}
    z = np.array([v["z_per_layer"] for v in out["nulls"].values()])  # [families, L_band]
    worst = np.nanmin(z, axis=0)
    j = int(np.nanargmax(worst)) if np.isfinite(worst).any() else 0
    q95 = [v["null_max_q95"] for v in out["nulls"].values()]
    clears = bool(np.isfinite(z[:, j]).all() and all(zj >= q for zj, q in zip(z[:, j], q95)))
    out.update(layer=int(band[j]), z=float(worst[j]), effect=float(effect[j]), clears_at_layer=clears)
    return out


def confirm(model, tokenizer, prompts, direction: np.ndarray, layer: int, alpha: float, unit_ratio: float, residual_norm: float,
            ci_level: float) -> dict:
    """Mean per-prompt log-odds change (lo(+alpha) - lo(-alpha)) / 2 at `layer`, with a t interval over prompts."""
    from scipy import stats

    from steering.logodds import steered_logodds

    df = steered_logodds(model, tokenizer, prompts, direction, layer, (-alpha, alpha), unit_ratio=unit_ratio, residual_norm=residual_norm)
    wide = df.pivot_table(index=["prompt_id", "pair"], columns="alpha", values="logodds")
    per_item = (wide[alpha] - wide[-alpha]) / 2
    per_prompt = per_item.groupby(level="prompt_id").mean()
    kinds = df.drop_duplicates("prompt_id").set_index("prompt_id")["kind"]
    n = len(per_prompt)
    m, se = float(per_prompt.mean()), float(per_prompt.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    t = float(stats.t.ppf(0.5 + ci_level / 2, n - 1)) if n > 1 else float("nan")
    by_kind = {k: float(v) for k, v in per_prompt.groupby(kinds.reindex(per_prompt.index).to_numpy()).mean().items()}
    return {"layer": layer, "alpha": alpha, "mean": m, "ci": [m - t * se, m + t * se], "n_prompts": n, "by_kind": by_kind,
            "ci_kind": f"{ci_level:.0%} t interval over prompts (prompt clusters: each prompt's mean over continuation pairs)"}


def run_axis_claim(model, tokenizer, vectors, acts: np.ndarray, examples: pd.DataFrame, out_dir, *, protocol: Protocol = PROTOCOL,
                   maze_config=None, seed: int = 0, stories: str | None = None, progress: bool = False) -> dict:
    """Claim 5's primary on the maze-naive `model` with the trained `vectors` (ConceptVectors) and their extraction
    activations; writes axis_claim.json and axis_layers.parquet into `out_dir` and returns the claim's inputs."""
    from core.artifacts import atomic_write_json, atomic_write_parquet
    from probes.emotion import valence_directions
    from steering.logodds import directional_effects, logodds_gradients
    from steering.prompts import sentiment_prompts

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    band = protocol.band.layers(vectors.n_layers)
    c5 = protocol.claim5
    prompts = sentiment_prompts(maze_config)
    g = logodds_gradients(model, tokenizer, prompts, layers=band, progress=progress)
    axis = welfare_axis(vectors, band)
    valence = valence_directions(model, tokenizer, band, "a", stories=stories)
    null_effects = {name: directional_effects(g, d, c5.unit_ratio).mean(-1)
                    for name, d in null_directions(acts, examples, band, protocol.nulls.draws, seed).items()}

    def effect(d: np.ndarray) -> np.ndarray:
        return directional_effects(g, d, c5.unit_ratio)[0].mean(-1)

    res = {"axis": against_nulls(effect(axis), null_effects, band),
           "valence": against_nulls(effect(np.stack([valence[l] for l in band])), null_effects, band)}
    layer = res["axis"]["layer"]
    j = band.index(layer)
    res["confirm"] = confirm(model, tokenizer, prompts, axis[j], layer, c5.confirm_alpha, c5.unit_ratio, float(g.residual_norm[j]),
                             protocol.ci_level)
    res.update(band=[band[0], band[-1]], protocol=protocol.stamp(), n_items=len(g.items), unit_ratio=c5.unit_ratio,
               statistic="d(teacher-forced sentiment log-odds)/d alpha, mean over prompts x continuation pairs; alpha 1 = "
                         f"{c5.unit_ratio} x the mean residual norm at the layer, added at every assistant token")
    rows = pd.DataFrame({"layer": band, "axis_effect": res["axis"]["effect_per_layer"], "valence_effect": res["valence"]["effect_per_layer"],
                         "residual_norm": g.residual_norm,
                         **{f"{f}_{q}": np.percentile(ne, q, axis=0) for f, ne in null_effects.items() for q in (2.5, 50, 97.5)}})
    atomic_write_parquet(out / "axis_layers.parquet", rows)
    atomic_write_json(out / "axis_claim.json", res)
    return res
