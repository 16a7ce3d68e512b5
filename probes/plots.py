"""The analysis figures (PNG, written atomically): antiparallelism, layer metrics, logit lens,
emotion scatter, tracking histograms. Each reads only the tables `run_analyses` writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from core.artifacts import atomic_write_png

COLORS = {"mold": "C3", "gold": "C2", "path": "C7"}


def _savefig(fig, path: Path) -> None:
    atomic_write_png(path, fig, dpi=110, bbox_inches="tight")


def analysis_plots(out: Path, summary: dict, metrics: pd.DataFrame, emo: pd.DataFrame, track: pd.DataFrame, lens: pd.DataFrame) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_layers = summary["n_layers"]
    xs = np.arange(n_layers)
    spaces = list(summary["antiparallel"])
    fig, axes = plt.subplots(1, len(spaces), figsize=(6.5 * len(spaces), 4), squeeze=False)
    for ax, space in zip(axes[0], spaces):
        a = summary["antiparallel"][space]
        if a["shuffled_labels_hi"] is not None:
            ax.fill_between(xs, a["shuffled_labels_lo"], a["shuffled_labels_hi"], color="C1", alpha=0.25, label="shuffled labels (95%)")
        ax.plot(xs, a["trained"]["per_layer"], "o-", color="C3", ms=3, label="trained: cos(v_Mold, v_Gold)")
        ax.plot(xs, a["naive"]["per_layer"], "s--", color="C0", ms=3, label="naive: cos(u_Mold, u_Gold)")
        s = a["split"]
        ax.plot([s["layer"]], [s["cos_half_b"]], "k*", ms=10, label=f"layer chosen on half A ({s['layer']}), cos on half B")
        ax.axhline(0, color="k", lw=0.5)
        ax.set(xlabel="layer (input of block l)", ylabel="cosine", title=f"{space} vectors", ylim=(-1.05, 1.05))
        ax.legend(fontsize=7, loc="lower left")
    _savefig(fig, out / "cosine_by_layer.png")
    plt.close(fig)

    cols = (("auroc", "held-out AUROC"), ("abs_d", "|Cohen's d|"), ("overlap", "histogram overlap"),
            ("split_half_cos", "split-half reliability"), ("top5_share", "share of ||v||^2 in top 5 channels"))
    trained = metrics[metrics["model"] == "trained"]
    spaces = list(summary["l_star_by_space"])
    fig, axes = plt.subplots(len(spaces), len(cols), figsize=(3.4 * len(cols), 3.1 * len(spaces)), squeeze=False)
    for r, space in enumerate(spaces):
        for ax, (col, label) in zip(axes[r], cols):
            for k, c in COLORS.items():
                t = trained[(trained.space == space) & (trained.vector == k)].sort_values("layer")
                ax.plot(t.layer, t[col], "o-", ms=2, color=c, label=f"v_{k} (l*={summary['l_star_by_space'][space][k]})")
            ax.set_title(f"{label} ({space})", fontsize=8)
            ax.tick_params(labelsize=7)
        axes[r][0].legend(fontsize=6)
    fig.tight_layout()
    _savefig(fig, out / "layer_metrics.png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    info = summary["logit_lens"]
    ax.axhspan(info["random_lo"], info["random_hi"], color="0.85", label="random directions (95%)")
    for name, style in (("v_mold", "C3-"), ("v_gold", "C2-"), ("u_mold", "C3--"), ("u_gold", "C2--")):
        t = lens[lens.vector == name].sort_values("layer")
        ax.plot(t.layer, t.failure_score, style, marker="o", ms=3, label=name)
    ax.axvline(info["layer"], color="k", ls=":", lw=1, label=f"paper's lens layer {info['layer']}")
    ax.set(xlabel="layer", ylabel="failure score (mean percentile rank of failure tokens)", title="Logit lens: failure/impossibility tokens")
    ax.legend(fontsize=7)
    _savefig(fig, out / "logit_lens.png")
    plt.close(fig)

    layer = summary["emotion"]["layer"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5), squeeze=False, layout="constrained")
    for ax, tag in zip(axes[0], ("trained", "naive")):
        t = emo[(emo.model == tag) & (emo.layer == layer)]
        res = summary["emotion"][tag]
        sc = ax.scatter(t.cos_mold, t.cos_gold, c=t.valence, cmap="coolwarm_r", vmin=-1, vmax=1)
        for _, r in t.iterrows():
            ax.annotate(r.emotion, (r.cos_mold, r.cos_gold), fontsize=7, xytext=(2, 2), textcoords="offset points")
        v = "v" if tag == "trained" else "u"
        ax.set_title(f"{tag} {v}_*: layer {layer}, slope {res['slope']:.2f}, valence r {res['valence_r']:.2f} "
                     f"(random pair: r 95% [{res['null']['valence_r_lo']:.2f}, {res['null']['valence_r_hi']:.2f}])", fontsize=9)
        ax.set(xlabel=f"cos(emotion, {v}_Mold)", ylabel=f"cos(emotion, {v}_Gold)")
        ax.axhline(0, color="k", lw=0.4)
        ax.axvline(0, color="k", lw=0.4)
        fig.colorbar(sc, ax=ax, label="valence")
    _savefig(fig, out / "emotion_scatter.png")
    plt.close(fig)

    t = track[track.space == summary["verdict_space"]]
    combos = list(dict.fromkeys(zip(t.model, t.vector_set)))
    fig, axes = plt.subplots(2, max(1, len(combos)), figsize=(4.2 * max(1, len(combos)), 6), squeeze=False)
    for col, (m, vs) in enumerate(combos):
        for row, k in enumerate(("gold", "mold")):
            ax = axes[row, col]
            s = t[(t.model == m) & (t.vector_set == vs) & (t.vector == k)]
            bins = np.histogram_bin_edges(s.projection, min(25, max(5, len(s) // 8)))
            for final, c in (("gold", "C2"), ("mold", "C3")):
                ax.hist(s.projection[s.final == final], bins=bins, alpha=0.6, color=c, label=f"{final}-final")
            ax.set_title(f"{m} acts on {vs}_{k} (layer {s.layer.iloc[0] if len(s) else '?'}, {summary['verdict_space']})", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.legend(fontsize=7)
    fig.tight_layout()
    _savefig(fig, out / "tracking_hist.png")
    plt.close(fig)
