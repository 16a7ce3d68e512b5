"""Claim 5 measured the fair way: steering directions norm-matched in units of the residual
norm, >= 10 random directions, a valence positive control, paired differences.

Every direction (v_*, the naive u_*, the valence control, the random ones) is unit-normalised
and scaled to `unit_ratio` x the mean residual norm at the steering layer, so alpha = 1 adds
the same norm for all of them and ||alpha * v|| / ||h_l|| = alpha x unit_ratio (recorded). The
random directions use fixed seeds, the same at every layer and alpha, so differences are paired.
`claim_inputs` turns the sentiment samples into what welfare_axis/claims.py reads.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from core.stats import mean_ci
from probes.vectors import ConceptVectors
from steering.catalog import DEFAULT_ALPHAS
from steering.screen import random_directions
from steering.stats import rows_for_vector, slope_with_ci
from steering.vectors import SteeringVector

RANDOM_PREFIX = "random"


def claim_directions(vectors: ConceptVectors, control: ConceptVectors, layer: int, valence: torch.Tensor | None,
                     unit_norm: float, n_random: int, seed: int) -> list[SteeringVector]:
    """v_gold, v_mold, u_gold, u_mold, valence and n random directions at `layer`, each of norm `unit_norm`."""
    raw: dict[str, tuple[torch.Tensor, str, str | None, dict | None]] = {}
    for c in ("gold", "mold"):
        raw[f"v_{c}"] = (vectors.get(c, layer), "trained", c, vectors.meta)
        raw[f"u_{c}"] = (control.get(c, layer), "control", c, control.meta)
    if valence is not None:
        raw["valence"] = (valence, "positive_control", None, None)
    for name, d in random_directions(vectors.hidden_size, n_random, seed).items():
        raw[name] = (d, "random", None, None)
    out = []
    for name, (d, kind, concept, meta) in raw.items():
        d = d.float()
        if not torch.isfinite(d).all() or float(d.norm()) == 0:
            raise ValueError(f"steering direction {name} at layer {layer} is zero or not finite; pick another layer")
        out.append(SteeringVector(name, d / d.norm() * unit_norm, layer, kind, concept, meta))
    return out


def per_prompt_slopes(df: pd.DataFrame, vector: str, metric: str = "score", unit: str = "prompt_id") -> pd.Series:
    """OLS slope of the metric on alpha per prompt (the vector's rows plus the shared alpha-0 rows)."""
    cells = rows_for_vector(df, vector).groupby([unit, "alpha"])[metric].mean().unstack("alpha")
    a = np.asarray(cells.columns, dtype=float)
    a = a - a.mean()
    return pd.Series((cells.to_numpy() * a).sum(1) / (a * a).sum(), index=cells.index)


def paired_diff(df: pd.DataFrame, a: str, b: str, seed: int = 0, n_boot: int = 2000) -> tuple[float, float, float]:
    """Slope(a) - slope(b) with a prompt-level bootstrap 95% CI (the same prompts and samples: paired)."""
    ci = mean_ci((per_prompt_slopes(df, a) - per_prompt_slopes(df, b)).dropna().to_numpy(), n_boot, seed)
    return ci["value"], ci["ci_lo"], ci["ci_hi"]


def claim_inputs(df: pd.DataFrame, layer: int, layer_rule: str, unit_ratio: float, seed: int = 0) -> dict:
    """What claims.verdict_steering reads, from sentiment samples with v_*, u_*, valence and random rows."""
    names = sorted(set(df["vector"]) - {"none"})
    slopes = {n: slope_with_ci(rows_for_vector(df, n), "score", seed=seed) for n in names}
    rnd = np.array([slopes[n]["slope"] for n in names if n.startswith(RANDOM_PREFIX + "_")])
    out = {"layer": layer, "layer_rule": layer_rule, "unit_ratio": unit_ratio,
           "alpha_in_residual_norms": {str(a): float(a) * unit_ratio for a in sorted(set(df["alpha"]))},
           "n_random": int(len(rnd)), "n_prompts": int(df["prompt_id"].nunique()),
           "random_lo": float(np.percentile(rnd, 2.5)) if len(rnd) else float("nan"),
           "random_hi": float(np.percentile(rnd, 97.5)) if len(rnd) else float("nan"),
           "random_slopes": [float(x) for x in rnd], "slopes": slopes}
    for n in ("v_mold", "v_gold", "u_mold", "u_gold", "valence"):
        out[n] = slopes[n]["slope"] if n in slopes else float("nan")
    for c in ("mold", "gold"):
        if f"v_{c}" in slopes and f"u_{c}" in slopes:
            out[f"diff_{c}"], out[f"diff_{c}_lo"], out[f"diff_{c}_hi"] = paired_diff(df, f"v_{c}", f"u_{c}", seed)
    return out


LAYER_RULE = ("argmax over screened layers of z(v_Gold) - z(v_Mold) on the sentiment log-odds, prompt half a "
              "(z: the effect in SDs of the random directions' effects at that layer)")


def choose_steering_layer(summary: pd.DataFrame, layers: list[int]) -> int:
    """The layer where v_Gold raises and v_Mold lowers the screen's sentiment log-odds most, in random-direction SDs.

    In SDs, not raw log-odds: the random directions' spread differs several-fold between layers
    (the raw rule picked a layer where the valence positive control, and so the instrument,
    could not beat random directions in generation), and the verdict compares with exactly
    that spread. Reads only v_* (and the random directions); ties go to the earlier layer.
    """
    z = summary[summary.readout == "sentiment"].set_index(["direction", "layer"])["random_z"]
    gap = {l: z.get(("v_gold", l), np.nan) - z.get(("v_mold", l), np.nan) for l in layers}
    finite = [l for l in layers if np.isfinite(gap[l])]
    if not finite:
        raise ValueError("the steering screen has no finite v_Gold/v_Mold effects in random-direction SDs (no random directions?)")
    return max(finite, key=lambda l: gap[l])


def run_sentiment_claim(model, tokenizer, vectors: ConceptVectors, control: ConceptVectors, l_star: int, out_dir, *,
                        screen_layers: list[int] | None = None, screen_ratios=(0.25, 0.5), screen_prompts: int | None = None,
                        unit_ratio: float = 0.1,
                        alphas=DEFAULT_ALPHAS, k: int = 1, n_random: int = 10, max_new_tokens: int = 40, at_l_star: bool = True,
                        maze_config=None, batch_size: int = 40, seed: int = 0, stories: str | None = None, progress: bool = True) -> dict:
    """Claim 5 end to end on the maze-naive `model`:

    1. screen every layer in `screen_layers` (default 1..L-1) with teacher-forced sentiment and
       compliance log-odds on prompt half "a", for v_*, u_*, the valence control and the random
       directions (steering.screen);
    2. choose the layer where v_Gold raises and v_Mold lowers sentiment most, in units of the
       random directions' spread (`choose_steering_layer`, half "a" only);
    3. generate self-reports at that layer (and at l* when it differs) on prompt half "b" and write
       the claim inputs (sentiment_claim.json; l_star/sentiment_claim.json).
    """
    from pathlib import Path

    from core.artifacts import atomic_write_json, atomic_write_parquet
    from probes.emotion import valence_directions
    from steering.evals import EvalRun, SweepConfig, run_sentiment
    from steering.prompts import prompt_half, sentiment_prompts
    from steering.screen import ScreenConfig, residual_norms, screen, summarize_screen

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n_layers = vectors.n_layers
    layers = sorted(set(screen_layers or range(1, n_layers)))
    need = sorted(set(layers) | {l_star})
    valence = {l: torch.from_numpy(d).float() for l, d in valence_directions(model, tokenizer, need, "a", stories=stories).items()}
    rnd = random_directions(vectors.hidden_size, n_random, seed)
    dirs = {l: {"v_gold": vectors.get("gold", l), "v_mold": vectors.get("mold", l), "u_gold": control.get("gold", l),
                "u_mold": control.get("mold", l), "valence": valence[l], **rnd} for l in layers}
    cfg = ScreenConfig(ratios=tuple(screen_ratios), n_prompts=screen_prompts, half="a", maze_config=maze_config)
    raw = screen(model, tokenizer, layers, dirs, cfg, progress=progress)
    summary = summarize_screen(raw, RANDOM_PREFIX, seed)
    atomic_write_parquet(out / "screen.parquet", raw)
    atomic_write_parquet(out / "screen_summary.parquet", summary)
    best = choose_steering_layer(summary, layers)
    _screen_plot(summary, out / "screen.png", best)

    half_b = [p_.text for p_ in prompt_half(sentiment_prompts(maze_config), "b")]
    results = {"screen_layers": layers, "screen_ratios": list(screen_ratios), "best_layer": best,
               "best_layer_rule": LAYER_RULE,
               "readout_tokens": raw.attrs.get("readout_tokens")}
    runs = [("best", best, out)] + ([("l_star", l_star, out / "l_star")] if at_l_star and l_star != best else [])
    norms = dict(zip((r[1] for r in runs), residual_norms(model, tokenizer, half_b, [r[1] for r in runs]).tolist()))
    for tag, layer, folder in runs:
        norm = float(norms[layer])
        svecs = claim_directions(vectors, control, layer, valence[layer], unit_ratio * norm, n_random, seed)
        sweep = SweepConfig(alphas, k=k, max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed)
        run_sentiment(EvalRun(model, tokenizer, svecs, None, None, sweep, folder, progress=progress), maze_config=maze_config, half="b")
        df = pd.read_parquet(folder / "sentiment_samples.parquet")
        rule = results["best_layer_rule"] if tag == "best" else "l* of v_Mold (the layer rule in the verdict space)"
        inputs = {**claim_inputs(df, layer, rule, unit_ratio, seed), "residual_norm": norm, "unit_norm": unit_ratio * norm,
                  "prompt_half": "b"}
        atomic_write_json(folder / "sentiment_claim.json", inputs)
        results[tag] = {k_: inputs[k_] for k_ in ("layer", "v_mold", "v_gold", "u_mold", "u_gold", "valence", "random_lo", "random_hi")}
    return results


def _screen_plot(summary: pd.DataFrame, path, best: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from core.artifacts import atomic_write_png

    readouts = list(dict.fromkeys(summary.readout))
    fig, axes = plt.subplots(1, len(readouts), figsize=(6.5 * len(readouts), 4), squeeze=False)
    for ax, readout in zip(axes[0], readouts):
        g = summary[summary.readout == readout]
        band = g[g.direction.str.startswith(RANDOM_PREFIX + "_")].groupby("layer")["effect"]
        ax.fill_between(band.min().index, band.quantile(0.025), band.quantile(0.975), color="0.85", label="random directions (95%)")
        for name, style in (("v_gold", "C2-"), ("v_mold", "C3-"), ("u_gold", "C2--"), ("u_mold", "C3--"), ("valence", "C0-")):
            t = g[g.direction == name].sort_values("layer")
            ax.plot(t.layer, t.effect, style, marker="o", ms=3, label=name)
        ax.axvline(best, color="k", ls=":", lw=1, label=f"chosen layer {best} (half a)")
        ax.axhline(0, color="k", lw=0.5)
        ax.set(xlabel="layer (input of block l)", ylabel="log-odds change per unit ratio", title=f"steering screen: {readout}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write_png(path, fig, dpi=110)
    plt.close(fig)
