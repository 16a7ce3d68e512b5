"""Bootstrap intervals with one result shape, {"value", "ci_lo", "ci_hi", "n"}, for every package.

Percentile bootstrap over the units given (episodes, prompts, batches); non-finite units are dropped.
"""

from __future__ import annotations

import numpy as np


def percentile_ci(boots: np.ndarray, level: float) -> tuple[float, float]:
    finite = boots[np.isfinite(boots)]
    if finite.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(finite, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def mean_diff_ci(a, b, n_boot: int = 2000, seed: int = 0, level: float = 0.95, paired: bool = True) -> dict[str, float]:
    """mean(a) - mean(b) with a percentile-bootstrap CI: paired (units resampled together; equal lengths) or
    each sample resampled on its own."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if paired:
        if len(a) != len(b):
            raise ValueError("a paired difference needs equal-length samples")
        return mean_ci(a - b, n_boot, seed, level)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if a.size == 0 or b.size == 0:
        return {"value": float("nan"), "ci_lo": float("nan"), "ci_hi": float("nan"), "n": 0}
    rng = np.random.default_rng(seed)
    boots = a[rng.integers(0, a.size, (n_boot, a.size))].mean(1) - b[rng.integers(0, b.size, (n_boot, b.size))].mean(1)
    lo, hi = percentile_ci(boots, level)
    return {"value": float(a.mean() - b.mean()), "ci_lo": lo, "ci_hi": hi, "n": int(min(a.size, b.size))}


def excludes_zero(ci: dict) -> bool:
    return bool(ci["ci_lo"] > 0 or ci["ci_hi"] < 0)


def mean_ci(x, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict[str, float]:
    """Mean of the samples `x` [n] with a percentile-bootstrap CI: {"value", "ci_lo", "ci_hi", "n"}."""
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return {"value": float("nan"), "ci_lo": float("nan"), "ci_hi": float("nan"), "n": 0}
    rng = np.random.default_rng(seed)
    boots = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(1)
    lo, hi = percentile_ci(boots, level)
    return {"value": float(x.mean()), "ci_lo": lo, "ci_hi": hi, "n": int(x.size)}


def ratio_of_means_ci(num, den, n_boot: int = 2000, seed: int = 0, level: float = 0.95, paired: bool = False) -> dict[str, float]:
    """mean(num) / mean(den) with a percentile-bootstrap CI.

    num [n], den [m]. Unpaired (two different example sets, e.g. off-target vs maze prompts):
    each set is resampled on its own. Paired (num[i] and den[i] come from the same unit, e.g.
    the SFT and RL step on one batch): the units are resampled together, so n == m is required.
    A ratio of means, not a mean of ratios: one unit with a near-zero denominator cannot
    dominate it. Pairs with a non-finite member are dropped.
    """
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    if paired:
        if num.shape != den.shape:
            raise ValueError(f"a paired ratio needs equal-length samples, got {num.shape} and {den.shape}")
        keep = np.isfinite(num) & np.isfinite(den)
        num, den = num[keep], den[keep]
    else:
        num, den = num[np.isfinite(num)], den[np.isfinite(den)]
    out = {"value": float("nan"), "ci_lo": float("nan"), "ci_hi": float("nan"), "n_num": int(num.size), "n_den": int(den.size)}
    if num.size == 0 or den.size == 0:
        return out
    rng = np.random.default_rng(seed)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["value"] = float(num.mean() / den.mean()) if den.mean() != 0 else float("nan")
        if paired:
            idx = rng.integers(0, num.size, size=(n_boot, num.size))
            boots = num[idx].mean(1) / den[idx].mean(1)
        else:
            boots = num[rng.integers(0, num.size, (n_boot, num.size))].mean(1) / den[rng.integers(0, den.size, (n_boot, den.size))].mean(1)
    out["ci_lo"], out["ci_hi"] = percentile_ci(boots, level)
    return out
