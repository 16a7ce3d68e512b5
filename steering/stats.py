"""Slopes over alpha with prompt-level bootstrap CIs, and the "X" plot.

The unit of resampling is the prompt (a cluster bootstrap): a prompt's samples at every
alpha move together, so the CI reflects prompt-to-prompt variation, not only sampling noise.
With the same number of samples in every (prompt, alpha) cell, the OLS slope over all rows
equals the slope over cell means, which is what makes the bootstrap a few matrix ops.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

UNSTEERED = "none"  # vector name of the shared alpha = 0 rows


def rows_for_vector(df: pd.DataFrame, vector: str) -> pd.DataFrame:
    """The vector's own rows plus the shared unsteered (alpha = 0) rows."""
    return df[(df["vector"] == vector) | ((df["vector"] == UNSTEERED) & (df["alpha"] == 0))]


def slope_with_ci(
    df: pd.DataFrame, metric: str, unit: str = "prompt_id", n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> dict:
    """OLS slope of `metric` on alpha, mean per alpha, and bootstrap CIs (resampling `unit`)."""
    cells = df.groupby([unit, "alpha"])[metric].mean().unstack("alpha")  # [units, alphas], NaN if missing
    alphas = np.asarray(cells.columns, dtype=float)
    m = cells.to_numpy(dtype=float)
    q = [(1 - level) / 2, 1 - (1 - level) / 2]

    def slope(means: np.ndarray) -> np.ndarray:  # means: [..., alphas]
        a = alphas - alphas.mean()
        return (means * a).sum(-1) / (a * a).sum() if len(alphas) > 1 else np.full(means.shape[:-1], np.nan)

    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN cells (e.g. unparseable judge scores) give NaN
        means = np.nanmean(m, axis=0)
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, m.shape[0], size=(n_boot, m.shape[0]))
        boot_means = np.nanmean(m[idx], axis=1)  # [n_boot, alphas]
        boot_slopes = slope(boot_means)
        lo, hi = np.nanquantile(boot_slopes, q) if np.isfinite(boot_slopes).any() else (np.nan, np.nan)
        mlo, mhi = np.nanquantile(boot_means, q, axis=0)
    key = lambda a: float(a)  # noqa: E731 - JSON keys as plain floats
    return {
        "slope": float(slope(means)),
        "ci_lo": float(lo),
        "ci_hi": float(hi),
        "mean_by_alpha": {key(a): float(v) for a, v in zip(alphas, means)},
        "ci_by_alpha": {key(a): [float(l), float(h)] for a, l, h in zip(alphas, mlo, mhi)},
        "n_units": int(m.shape[0]),
        "n_rows": int(len(df)),
    }


def summarize(df: pd.DataFrame, metric: str, vectors: list[str], split: str | None = None, seed: int = 0) -> dict:
    """{vector: stats} or, with a split column, {vector: {split_value: stats}}."""
    out = {}
    for v in vectors:
        sub = rows_for_vector(df, v)
        if split is None:
            out[v] = slope_with_ci(sub, metric, seed=seed)
        else:
            out[v] = {str(s): slope_with_ci(g, metric, seed=seed) for s, g in sub.groupby(split)}
    return out


def summary_table(summary: dict, metric: str) -> pd.DataFrame:
    """Flat table: one row per (vector[, split]) with slope, CI and the mean at each alpha."""
    rows = []
    for v, stats in summary.items():
        groups = {"": stats} if "slope" in stats else stats
        for split, s in groups.items():
            row = {"vector": v, "split": split, "metric": metric, "slope": s["slope"], "ci_lo": s["ci_lo"], "ci_hi": s["ci_hi"]}
            row.update({f"mean@{a:g}": m for a, m in s["mean_by_alpha"].items()})
            rows.append(row)
    return pd.DataFrame(rows)


def _style(name: str) -> dict:
    color = {"gold": "#d4a017", "mold": "#2e7d32", "path": "#555555"}.get(name.split("_", 1)[-1], "#1f77b4")
    if name.startswith("u_"):
        return {"color": color, "linestyle": "--", "alpha": 0.8}
    if name.startswith("random"):
        return {"color": "#888888", "linestyle": ":"}
    return {"color": color, "linestyle": "-", "linewidth": 2}


def x_plot(summary: dict, path, ylabel: str, title: str) -> None:
    """Mean metric vs alpha per vector with bootstrap CI bands (one panel per split if split)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = next(iter(summary.values()))
    splits = [""] if "slope" in first else list(first)
    fig, axes = plt.subplots(1, len(splits), figsize=(5.5 * len(splits), 4.2), squeeze=False, sharey=True)
    for ax, split in zip(axes[0], splits):
        for v, stats in summary.items():
            s = stats if split == "" else stats.get(split)
            if s is None:
                continue
            a = sorted(s["mean_by_alpha"])
            ax.plot(a, [s["mean_by_alpha"][x] for x in a], marker="o", label=f"{v}: slope {s['slope']:+.2f} [{s['ci_lo']:+.2f}, {s['ci_hi']:+.2f}]", **_style(v))
            ax.fill_between(a, [s["ci_by_alpha"][x][0] for x in a], [s["ci_by_alpha"][x][1] for x in a], color=_style(v)["color"], alpha=0.12)
        ax.axhline(0, color="black", linewidth=0.5)
        ax.set_xlabel("alpha")
        ax.set_title(f"{title}{' - ' + split if split else ''}")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel(ylabel)
    fig.tight_layout()
    from core.artifacts import atomic_write_png

    atomic_write_png(path, fig, dpi=120)
    plt.close(fig)
