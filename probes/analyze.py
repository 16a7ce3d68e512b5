"""`run_analyses`: layer choice, antiparallelism, logit lens, emotion alignment, tracking.

Inputs: a vectors folder written by `extract_vectors(..., out_dir=...)` (vectors,
class means, per-example activations) and optionally a control folder (the maze-naive
model's u_*). The models are reloaded from each folder's meta.json (model id, adapter,
system-prompt policy). Every number goes to summary.json / parquet, every plot to PNG.

Conventions stated once here and recorded in summary.json:
* layer l = output of decoder block l, 0-based, embeddings excluded (probes/layers.py);
* held-out statistics: 5-fold StratifiedGroupKFold (strata: class x final direction; groups:
  maze seed, so no maze is on both sides); each example is projected on the
  class vector computed without its fold; AUROC/|d|/overlap are class vs rest;
* logit lens: W_U @ (final RMSNorm gain * v), no re-normalisation (a scale does not
  change the ranking); top-k promoted (highest logits) and suppressed (lowest);
* tracking d: for v_k, Cohen's d of projections of k-final vs the other class's final
  trajectories (gold vs mold), so both d_gold and d_mold are positive when they track.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from envs import MazeConfig, scripted_trajectories
from envs.artifacts import atomic_path, atomic_write_json, atomic_write_parquet, provenance
from probes.capture import capture_texts
from probes.emotion import alignment, denoise_basis, emotion_vectors, generate_stories, load_neutral, load_stories, story_activations
from probes.extract import load_examples
from probes.layers import LAYER_CONVENTION
from probes.metrics import (
    centred_mean_cosines,
    choose_layer,
    cohens_d,
    cosine,
    cosine_per_layer,
    cos_from_norms,
    held_out_projections,
    permutation_null_cosines,
    null_band,
    separation,
)
from probes.vectors import ConceptVectors
from training.chat import render_up_to_last_assistant

CLASSES = ("mold", "gold", "path")


@dataclass
class AnalyzeConfig:
    seed: int = 0
    n_tracking: int = 100  # fresh trajectories per class (gold-final, mold-final)
    folds: int = 5
    bins: int = 30
    null_draws: int = 200
    perm_draws: int = 100  # label-permutation null for cos(v_mold, v_gold)
    top_k: int = 20
    batch_size: int = 16
    probe: bool = True  # logistic-regression probes per layer (second estimate)
    emotion_layer: int | None = None  # default floor(2L/3)
    logit_layer: int | None = None  # default floor(5L/6)
    stories: str | None = None  # emotion stories JSON (default: shipped set)
    neutral: str | None = None
    generate_stories: bool = False
    n_generated: int = 8
    progress: bool = True


# -- layer metrics ---------------------------------------------------------------------------------
def layer_metrics(acts: np.ndarray, examples: pd.DataFrame, vectors: ConceptVectors, cfg: AnalyzeConfig):
    """(per-layer table, l* per class, label-permutation cosines [L, perm_draws])."""
    from sklearn.model_selection import StratifiedGroupKFold
    from threadpoolctl import threadpool_limits
    from tqdm.auto import tqdm

    labels = examples["kind"].to_numpy()
    groups = examples["maze_seed"].to_numpy()
    # Folds stratified by class x final direction (and grouped by maze). The scripted data are
    # exactly balanced over final directions, a dominant nuisance cluster; unstratified folds
    # then have anti-correlated train/test compositions, which on the naive model gave
    # held-out AUROC ~0.33 at every layer ("anti-learning"); stratified it is ~0.5.
    strata = np.char.add(labels.astype(str), examples["final_direction"].astype(str).to_numpy())
    n_folds = min(cfg.folds, int(np.min(np.unique(strata, return_counts=True)[1])))
    if n_folds < 2:
        raise ValueError("too few examples per class and final direction for held-out statistics; extract with a larger -n")
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=cfg.seed)
    folds = list(splitter.split(np.zeros(len(labels)), strata, groups))
    n_layers = acts.shape[1]
    rows = []
    perm_cos = np.empty((n_layers, cfg.perm_draws))
    # One BLAS thread: these are many small problems, and multi-threaded OpenBLAS on a busy
    # 2-core machine was measured 25x slower than one thread here.
    with threadpool_limits(1, user_api="blas"):
        for layer in tqdm(range(n_layers), desc="layer metrics", disable=not cfg.progress):
            x = np.asarray(acts[:, layer, :], dtype=np.float64)
            perm_cos[layer] = permutation_null_cosines(x, labels, "mold", "gold", cfg.perm_draws, cfg.seed + layer)
            for k in CLASSES:
                p = held_out_projections(x, labels, k, folds)
                row = {"layer": layer, "vector": k, **separation(p, labels == k, cfg.bins)}
                row["d"] = cohens_d(p[labels == k], p[labels != k])  # signed; the rule uses |d|
                row["norm"] = float(np.linalg.norm(vectors.get(k, layer).numpy()))
                if cfg.probe:
                    row.update(_probe(x, labels == k, folds, vectors.get(k, layer).numpy(), cfg.seed))
                rows.append(row)
    table = pd.DataFrame(rows)
    l_star = {}
    for k in CLASSES:
        t = table[table.vector == k].sort_values("layer")
        l_star[k] = choose_layer(t.auroc.to_numpy(), t.abs_d.to_numpy(), t.overlap.to_numpy())
    return table, l_star, perm_cos


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


# -- logit lens -------------------------------------------------------------------------------------
def readable_token(tokenizer, token_id: int) -> str:
    """A token as text (byte-level pieces decoded; undecodable bytes shown as the raw piece)."""
    piece = tokenizer.convert_ids_to_tokens(int(token_id))
    text = tokenizer.convert_tokens_to_string([piece])
    return piece if "\ufffd" in text else text


def logit_lens(model, tokenizer, v: torch.Tensor, k: int = 20) -> dict:
    """Top-k promoted / suppressed tokens of direction v through the unembedding."""
    w_u = model.get_output_embeddings().weight.detach().float().cpu()
    base = getattr(model, "model", None)
    norm = getattr(base, "norm", None) if base is not None else None
    gain = norm.weight.detach().float().cpu() if norm is not None and hasattr(norm, "weight") else torch.ones(v.shape[-1])
    logits = w_u @ (gain * v.float().cpu())
    top = torch.topk(logits, k).indices.tolist()
    bottom = torch.topk(-logits, k).indices.tolist()
    return {
        "promoted": [readable_token(tokenizer, i) for i in top],
        "suppressed": [readable_token(tokenizer, i) for i in bottom],
        "promoted_logits": [float(logits[i]) for i in top],
        "suppressed_logits": [float(logits[i]) for i in bottom],
    }


# -- models and data -------------------------------------------------------------------------------
def load_model_from_meta(meta: dict, device: str = "cpu"):
    from training.models import load_model

    m = meta.get("model") or {}
    if not m.get("model_id"):
        raise ValueError("meta.json has no model id; re-run 'welfare-axis extract'")
    return load_model(
        m["model_id"], device=device, adapter=m.get("adapter"), system_prompt=m.get("system_prompt_policy", "none")
    )


def tracking_texts(tokenizer, meta: dict, n: int, seed: int) -> tuple[list[str], np.ndarray]:
    """Fresh gold-final and mold-final trajectories (seed differs from extraction), rendered like extraction."""
    config = MazeConfig(**meta["maze_config"]) if meta.get("maze_config") else MazeConfig()
    max_moves = meta.get("max_moves")
    texts, kinds = [], []
    for kind in ("gold", "mold"):
        for t in scripted_trajectories(kind, n, seed=seed, config=config, max_moves=max_moves):
            texts.append(render_up_to_last_assistant(tokenizer, t.messages))
            kinds.append(kind)
    return texts, np.array(kinds)


def tracking(model, tokenizer, texts, kinds, layers: dict[str, int], vector_sets: dict[str, ConceptVectors], cfg, tag: str, acts=None):
    """Projections of `model`'s activations on each vector set at the class's layer; rows + d per set."""
    ls = [layers["gold"], layers["mold"]]
    if acts is None:  # reuse when the control model is the same model
        acts = capture_texts(model, tokenizer, texts, ls, "last", batch_size=cfg.batch_size, progress=cfg.progress, desc=f"tracking {tag}")
    rows, ds = [], {}
    for set_name, cv in vector_sets.items():
        for j, k in enumerate(("gold", "mold")):
            p = (acts[:, j].double() @ cv.get(k, ls[j]).double()).numpy()
            other = "mold" if k == "gold" else "gold"
            ds[(set_name, k)] = cohens_d(p[kinds == k], p[kinds == other])
            rows += [
                {"model": tag, "vector_set": set_name, "vector": k, "layer": ls[j], "final": kinds[i], "projection": float(p[i])}
                for i in range(len(p))
            ]
    return rows, ds, acts


def _emotion_block(model, tokenizer, cv: ConceptVectors, stories, neutral, layers: list[int], cfg, tag: str, acts=None):
    per, neut = acts or story_activations(model, tokenizer, stories, neutral, layers, cfg.batch_size, cfg.progress)
    valence = {k: v.get("valence", np.nan) for k, v in stories["emotions"].items()}
    results, rows = {}, []
    for j, layer in enumerate(layers):
        basis = denoise_basis(neut[:, j])
        ev = emotion_vectors({k: a[:, j] for k, a in per.items()}, basis)
        res = alignment(ev, cv.get("gold", layer).numpy(), cv.get("mold", layer).numpy(), valence)
        res["n_denoise_components"] = int(len(basis))
        results[layer] = res
        for i, name in enumerate(res["names"]):
            rows.append(
                {
                    "model": tag,
                    "layer": layer,
                    "emotion": name,
                    "valence": valence.get(name),
                    "arousal": stories["emotions"][name].get("arousal"),
                    "cos_gold": float(res["cos_gold"][i]),
                    "cos_mold": float(res["cos_mold"][i]),
                    "pc1_score": float(res["pc1_score"][i]),
                }
            )
    return results, rows, (per, neut)


# -- plots ------------------------------------------------------------------------------------------
def _savefig(fig, path: Path) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")


def _plots(out: Path, summary: dict, metrics: pd.DataFrame, emo: pd.DataFrame, track: pd.DataFrame) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_layers = summary["n_layers"]
    xs = np.arange(n_layers)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.fill_between(xs, summary["null_band"]["lo"], summary["null_band"]["hi"], color="0.85", label="random directions (95%)")
    ax.fill_between(xs, summary["perm_null_band"]["lo"], summary["perm_null_band"]["hi"], color="C1", alpha=0.25,
                    label="shuffled class labels (95%)")
    ax.plot(xs, summary["cos_mold_gold"]["per_layer"], "o-", color="C3", label="trained: cos(v_Mold, v_Gold)")
    if summary["control_cos_mold_gold"]:
        ax.plot(xs, summary["control_cos_mold_gold"]["per_layer"], "s--", color="C0", label="naive: cos(u_Mold, u_Gold)")
    for k, c in (("mold", "C3"), ("gold", "C2")):
        ax.axvline(summary["l_star"][k], color=c, ls=":", lw=1, label=f"l* {k} = {summary['l_star'][k]}")
    ax.axhline(0, color="k", lw=0.5)
    ax.set(xlabel="layer (block output, 0-based)", ylabel="cosine", title="Antiparallelism of Mold and Gold vectors", ylim=(-1.05, 1.05))
    ax.legend(fontsize=7, loc="lower left")
    _savefig(fig, out / "cosine_by_layer.png")
    plt.close(fig)

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, col, label in zip(axes, ("auroc", "abs_d", "overlap"), ("held-out AUROC", "|Cohen's d|", "histogram overlap")):
        for k, c in (("mold", "C3"), ("gold", "C2"), ("path", "C7")):
            t = metrics[metrics.vector == k].sort_values("layer")
            ax.plot(t.layer, t[col], "o-", ms=3, color=c, label=f"v_{k} (l*={summary['l_star'][k]})")
        ax.set(xlabel="layer", title=label)
    axes[0].legend(fontsize=7)
    _savefig(fig, out / "layer_metrics.png")
    plt.close(fig)

    models = list(dict.fromkeys(emo.model)) if len(emo) else []
    fig, axes = plt.subplots(1, max(1, len(models)), figsize=(7 * max(1, len(models)), 5.5), squeeze=False, layout="constrained")
    layer = summary["emotion"]["layer"] if summary.get("emotion") else None
    for ax, m in zip(axes[0], models):
        t = emo[(emo.model == m) & (emo.layer == layer)]
        sc = ax.scatter(t.cos_mold, t.cos_gold, c=t.valence, cmap="coolwarm_r", vmin=-1, vmax=1)
        for _, r in t.iterrows():
            ax.annotate(r.emotion, (r.cos_mold, r.cos_gold), fontsize=7, xytext=(2, 2), textcoords="offset points")
        key = "emotion" if m == "trained" else None
        res = summary["emotion"] if key else summary["emotion"]["control"]
        if res and len(t) > 1:
            x = np.linspace(t.cos_mold.min(), t.cos_mold.max(), 10)
            ax.plot(x, res["slope"] * x + np.polyfit(t.cos_mold, t.cos_gold, 1)[1], "k--", lw=1)
            ax.set_title(f"{m}: layer {layer}, slope {res['slope']:.2f}, R {res['r']:.2f} "
                         f"(chance slope ~ {res.get('slope_expected_by_chance', float('nan')):.2f})", fontsize=10)
        ax.axhline(0, color="k", lw=0.4)
        ax.axvline(0, color="k", lw=0.4)
        ax.set(xlabel="cos(emotion, v_Mold)" if m == "trained" else "cos(emotion, u_Mold)",
               ylabel="cos(emotion, v_Gold)" if m == "trained" else "cos(emotion, u_Gold)")
        fig.colorbar(sc, ax=ax, label="valence")
    _savefig(fig, out / "emotion_scatter.png")
    plt.close(fig)

    combos = list(dict.fromkeys(zip(track.model, track.vector_set)))
    fig, axes = plt.subplots(2, max(1, len(combos)), figsize=(4.2 * max(1, len(combos)), 6), squeeze=False)
    for col, (m, vs) in enumerate(combos):
        for row, k in enumerate(("gold", "mold")):
            ax = axes[row, col]
            t = track[(track.model == m) & (track.vector_set == vs) & (track.vector == k)]
            bins = np.histogram_bin_edges(t.projection, min(25, max(5, len(t) // 8)))
            for final, c in (("gold", "C2"), ("mold", "C3")):
                ax.hist(t.projection[t.final == final], bins=bins, alpha=0.6, color=c, label=f"{final}-final")
            d = summary["tracking"]["d_table"].get(f"{m}|{vs}|{k}")
            ax.set_title(f"{m} acts on {vs}_{k} (layer {t.layer.iloc[0] if len(t) else '?'}), d={d:.2f}", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4))
            ax.legend(fontsize=7)
    _savefig(fig, out / "tracking_hist.png")
    plt.close(fig)


# -- main entry ---------------------------------------------------------------------------------------
def run_analyses(
    vectors_dir: str | Path,
    out_dir: str | Path,
    control_dir: str | Path | None = None,
    seed: int = 0,
    n_tracking: int = 100,
    device: str = "cpu",
    **options,
) -> dict:
    """All analyses of one vectors folder (and its naive control); writes the outputs and returns summary.json."""
    cfg = AnalyzeConfig(seed=seed, n_tracking=n_tracking, **options)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cv = ConceptVectors.load(vectors_dir)
    ctrl = ConceptVectors.load(control_dir) if control_dir is not None else None
    if ctrl is not None and (ctrl.n_layers, ctrl.hidden_size) != (cv.n_layers, cv.hidden_size):
        raise ValueError(f"control vectors are {ctrl.n_layers}x{ctrl.hidden_size}, vectors {cv.n_layers}x{cv.hidden_size}; use the same base model")
    n_layers, hidden = cv.n_layers, cv.hidden_size
    examples, acts = load_examples(vectors_dir)

    # 1. layer choice (held-out), logistic probes
    metrics, l_star, perm_cos = layer_metrics(acts, examples, cv, cfg)
    perm_lo, perm_hi = np.percentile(perm_cos, 2.5, axis=1), np.percentile(perm_cos, 97.5, axis=1)

    # 2. antiparallelism with control and random-direction null band
    v_m, v_g = cv.get("mold").numpy(), cv.get("gold").numpy()
    cos_mg = cosine_per_layer(v_m, v_g)
    lo, hi, _ = null_band(np.linalg.norm(v_m, axis=1), np.linalg.norm(v_g, axis=1), hidden, cfg.null_draws, seed)
    cos_rows = {
        "layer": np.arange(n_layers),
        "cos_mold_gold": cos_mg,
        "cos_mold_path": cosine_per_layer(v_m, cv.get("path").numpy()),
        "cos_gold_path": cosine_per_layer(v_g, cv.get("path").numpy()),
        "null_lo": lo,
        "null_hi": hi,
        "perm_null_lo": perm_lo,
        "perm_null_hi": perm_hi,
        "cos_from_norms": cos_from_norms(
            np.linalg.norm(v_m, axis=1), np.linalg.norm(v_g, axis=1), np.linalg.norm(cv.get("path").numpy(), axis=1)
        ),
        "norm_mold": np.linalg.norm(v_m, axis=1),
        "norm_gold": np.linalg.norm(v_g, axis=1),
    }

    def curve(c: np.ndarray) -> dict:
        return {"per_layer": [float(x) for x in c], "mean": float(c.mean()), "min": float(c.min()), "argmin": int(c.argmin()),
                "at_l_star": {k: float(c[l_star[k]]) for k in ("mold", "gold")}}

    ctrl_curve = None
    if ctrl is not None:
        c_cos = cosine_per_layer(ctrl.get("mold").numpy(), ctrl.get("gold").numpy())
        cos_rows["control_cos_mold_gold"] = c_cos
        ctrl_curve = curve(c_cos)
    tile_layer = math.floor(2 * n_layers / 3)

    def tile(c: ConceptVectors | None):
        if c is None or not c.class_means:
            return None
        return centred_mean_cosines({k: c.class_means[k][tile_layer].numpy() for k in CLASSES})

    # 3.-5. need the model(s)
    model, tok = load_model_from_meta(cv.meta, device)
    cmodel, ctok = None, None
    if ctrl is not None:
        same = lambda a, b: all(a.get(k) == b.get(k) for k in ("model_id", "adapter", "system_prompt_policy"))  # noqa: E731
        if same(cv.meta.get("model") or {}, ctrl.meta.get("model") or {}):
            cmodel, ctok = model, tok  # the control was extracted from the same weights
        else:
            cmodel, ctok = load_model_from_meta(ctrl.meta, device)

    logit_layer = cfg.logit_layer if cfg.logit_layer is not None else math.floor(5 * n_layers / 6)
    lens_rows, lens = [], {"layer": logit_layer}
    for tag, m_, t_, c_ in (("trained", model, tok, cv), ("naive", cmodel, ctok, ctrl)):
        if m_ is None:
            continue
        for layer in sorted({logit_layer, l_star["mold"], l_star["gold"]}):
            for k in CLASSES:
                res = logit_lens(m_, t_, c_.get(k, layer), cfg.top_k)
                if tag == "trained" and layer == logit_layer:
                    lens[k] = {"promoted": res["promoted"], "suppressed": res["suppressed"]}
                if tag == "naive" and layer == logit_layer:
                    lens.setdefault("control", {})[k] = {"promoted": res["promoted"], "suppressed": res["suppressed"]}
                for rank in range(cfg.top_k):
                    for side in ("promoted", "suppressed"):
                        lens_rows.append({"model": tag, "layer": layer, "vector": k, "side": side, "rank": rank,
                                          "token": res[side][rank], "logit": res[f"{side}_logits"][rank]})

    # emotion alignment
    emotion_layer = cfg.emotion_layer if cfg.emotion_layer is not None else tile_layer
    stories = load_stories(cfg.stories)
    if cfg.generate_stories:
        stories = generate_stories(model, tok, stories["emotions"], cfg.n_generated, seed)
        atomic_write_json(out / "generated_stories.json", stories)
    neutral = load_neutral(cfg.neutral)
    emo_layers = sorted({emotion_layer, l_star["gold"], l_star["mold"]})
    emo_res, emo_rows, emo_acts = _emotion_block(model, tok, cv, stories, neutral, emo_layers, cfg, "trained")
    ctrl_emo = None
    if ctrl is not None:
        reuse = emo_acts if cmodel is model else None
        ctrl_emo, rows, _ = _emotion_block(cmodel, ctok, ctrl, stories, neutral, emo_layers, cfg, "naive", reuse)
        emo_rows += rows
    main = emo_res[emotion_layer]
    emotion = {
        "layer": emotion_layer,
        "slope": main["slope"],
        "r": main["r"],
        # For emotion vectors in random directions, cos_gold vs cos_mold has slope and R about
        # cos(v_mold, v_gold) at this layer: the baseline the slope must beat.
        "slope_expected_by_chance": float(cos_mg[emotion_layer]),
        "gold_pole": main["gold_pole"],
        "mold_pole": main["mold_pole"],
        "pc1_explained": main["pc1_explained"],
        "pc1_valence_r": main["pc1_valence_r"],
        "cos_gold_pc1": main["cos_gold_pc1"],
        "cos_mold_pc1": main["cos_mold_pc1"],
        "n_denoise_components": main["n_denoise_components"],
        "n_emotions": len(main["names"]),
        "stories": "generated by the model" if cfg.generate_stories else (cfg.stories or "shipped probes/data/emotion_stories.json"),
        "token_reduce": "mean over story tokens from token 3, plain text (no chat template)",
        "by_layer": {str(layer): {"slope": r["slope"], "r": r["r"]} for layer, r in emo_res.items()},
        "control": None if ctrl_emo is None else {"slope": ctrl_emo[emotion_layer]["slope"], "r": ctrl_emo[emotion_layer]["r"],
                                                  "slope_expected_by_chance": float(c_cos[emotion_layer]),
                                                  "gold_pole": ctrl_emo[emotion_layer]["gold_pole"],
                                                  "mold_pole": ctrl_emo[emotion_layer]["mold_pole"]},
    }

    # tracking on fresh trajectories
    track_seed = int(cv.meta.get("seed") or 0) + 10_007 + seed
    texts, kinds = tracking_texts(tok, cv.meta, cfg.n_tracking, track_seed)
    track_layers = {"gold": l_star["gold"], "mold": l_star["mold"]}
    sets = {"v": cv}
    rows, ds, track_acts = tracking(model, tok, texts, kinds, track_layers, sets, cfg, "trained")
    d_table = {f"trained|v|{k}": ds[("v", k)] for k in ("gold", "mold")}
    if ctrl is not None:
        ctexts, ckinds = tracking_texts(ctok, ctrl.meta, cfg.n_tracking, track_seed)
        reuse = track_acts if cmodel is model and ctexts == texts else None
        r2, d2, _ = tracking(cmodel, ctok, ctexts, ckinds, track_layers, {"u": ctrl, "v": cv}, cfg, "naive", reuse)
        rows += r2
        d_table.update({f"naive|{vs}|{k}": d for (vs, k), d in d2.items()})
    track = pd.DataFrame(rows)
    tracking_summary = {
        "layer": track_layers,
        "n_per_class": cfg.n_tracking,
        "seed": track_seed,
        "d_definition": "Cohen's d of projections on v_k at l*_k: k-final minus other-final (gold vs mold), pooled SD",
        "d_gold": d_table["trained|v|gold"],
        "d_mold": d_table["trained|v|mold"],
        # naive model's activations on its own u_* (the control), and on the trained v_*
        "control_d_gold": d_table.get("naive|u|gold"),
        "control_d_mold": d_table.get("naive|u|mold"),
        "naive_acts_on_v_d_gold": d_table.get("naive|v|gold"),
        "naive_acts_on_v_d_mold": d_table.get("naive|v|mold"),
        "d_table": d_table,
    }

    probe_cos = {k: [float(x) for x in metrics[metrics.vector == k].sort_values("layer")["probe_cos"]] for k in CLASSES} if cfg.probe else None
    summary = {
        "n_layers": n_layers,
        "hidden_size": hidden,
        "layer_convention": LAYER_CONVENTION,
        "l_star": l_star,
        "layer_rule": "l* = floor(mean(argmax held-out AUROC, argmax |d|, argmin overlap)); 5-fold StratifiedGroupKFold (strata class x final direction, groups maze seed)",
        "cos_mold_gold": curve(cos_mg),
        "control_cos_mold_gold": ctrl_curve,
        "null_band": {"lo": [float(x) for x in lo], "hi": [float(x) for x in hi], "draws": cfg.null_draws, "percentiles": [2.5, 97.5],
                      "kind": "random Gaussian directions with the norms of v_mold, v_gold"},
        "perm_null_band": {"lo": [float(x) for x in perm_lo], "hi": [float(x) for x in perm_hi], "draws": cfg.perm_draws,
                           "kind": "class labels shuffled, vectors recomputed (balanced 3 classes without signal give about -0.5)"},
        "tile_mean_cos_layer": tile_layer,
        "tile_mean_cos": tile(cv),
        "control_tile_mean_cos": tile(ctrl),
        "logit_lens": {**lens, "recipe": "W_U @ (final-norm gain * v), top/bottom k"},
        "emotion": emotion,
        "tracking": tracking_summary,
        "probe_cosine": probe_cos,
        "probe_auroc": {k: [float(x) for x in metrics[metrics.vector == k].sort_values("layer")["probe_auroc"]] for k in CLASSES} if cfg.probe else None,
        "vectors_dir": str(vectors_dir),
        "control_dir": None if control_dir is None else str(control_dir),
        "provenance": provenance(config=asdict(cfg), seed=seed, model=cv.meta.get("model"),
                                 control_model=None if ctrl is None else ctrl.meta.get("model")),
    }
    meta = {"layer_convention": LAYER_CONVENTION, "vectors_dir": str(vectors_dir), "control_dir": summary["control_dir"], "seed": seed}
    atomic_write_parquet(out / "layer_metrics.parquet", metrics, metadata=meta)
    atomic_write_parquet(out / "cosines.parquet", pd.DataFrame(cos_rows), metadata=meta)
    atomic_write_parquet(out / "logit_lens.parquet", pd.DataFrame(lens_rows), metadata=meta)
    atomic_write_parquet(out / "emotions.parquet", pd.DataFrame(emo_rows), metadata=meta)
    atomic_write_parquet(out / "tracking.parquet", track, metadata=meta)
    atomic_write_json(out / "layer_choice.json", {**l_star, "layer_convention": LAYER_CONVENTION})
    _plots(out, summary, metrics, pd.DataFrame(emo_rows), track)
    atomic_write_json(out / "summary.json", summary)
    return summary
