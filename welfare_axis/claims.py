"""The claims table: each claim of the study, what this run measured, and a verdict from
thresholds stated here (and printed in the report) before any number is looked at."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

REPRODUCED, NOT_REPRODUCED, NOT_MEASURED = "reproduced", "not reproduced", "not measured"

# Words that mark failure / impossibility / negation, matched on whole logit-lens tokens.
FAILURE_WORDS = frozenset(
    """cannot can't cant impossible impossibility not never no nothing none nowhere unable fail fails failed
    failure doesn't didn't don't won't isn't aren't wasn't couldn't shouldn't wouldn't exist nonexistent
    unfortunately sorry invalid error lost lose unavailable neither nor without refuse denied""".split()
)


@dataclass(frozen=True)
class Threshold:
    claim: str
    paper: str
    rule: str


THRESHOLDS = (
    Threshold(
        "1. v_Mold and v_Gold are nearly antiparallel",
        "min over layers of cos(v_Mold, v_Gold) in [-0.95, -0.84]; naive controls u_* only [-0.23, -0.13]; layer mean -0.21",
        "reproduced if the min over layers of cos(v_Mold, v_Gold) <= -0.5 and is at least 0.3 below the control vectors' min",
    ),
    Threshold(
        "2. Logit lens: v_Mold promotes failure tokens, v_Gold suppresses them",
        '"cannot", "impossible", "does not exist" among v_Mold\'s top tokens',
        "reproduced if >= 2 of v_Mold's top-20 promoted and >= 2 of v_Gold's top-20 suppressed tokens are failure/negation words",
    ),
    Threshold(
        "3. Emotion vectors line up on one valence axis",
        "cos with v_Gold vs cos with v_Mold across emotions: slope near -1; control vectors show no pattern",
        "reproduced if the OLS slope <= -0.5 and at least 0.1 below the slope expected by chance from cos(v_Mold, v_Gold) "
        "alone, and the Gold pole is the positive one: Pearson r between the emotions' valence and "
        "cos(e, v_Gold) - cos(e, v_Mold) >= 0.5",
    ),
    Threshold(
        "4. Projections track goal achievement",
        "Cohen's d > 1.6 between Gold-final and Mold-final trajectories after training, |d| < 0.12 before",
        "reproduced if |d| >= 1.0 on both v_Gold and v_Mold for the trained model and the naive model's |d| is at least 0.5 smaller",
    ),
    Threshold(
        "5. Steering the naive model moves self-reported sentiment",
        "+0.71 per unit alpha for v_Gold, -0.65 for v_Mold (best layer); norm-matched controls flat",
        "reproduced if the sentiment slope is < 0 for v_Mold and > 0 for v_Gold, both 95% CIs excluding 0",
    ),
    Threshold(
        "6. Robust to emoji swap, scale, base vs instruct, algorithm, LoRA vs full, SFT",
        "effects survive all variations",
        "not run by one reproduce run (needs several trainings); compare runs of reproduce --training rl / sft / sft+rl",
    ),
)


def _num(x) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def _ok(x) -> bool:
    return isinstance(x, (int, float)) and not math.isnan(float(x))


def failure_token_count(tokens: list[str]) -> int:
    return sum(1 for t in tokens if re.sub(r"[^a-z']", "", str(t).lower().replace("’", "'")) in FAILURE_WORDS)


def verdict_antiparallel(cos_min: float, control_min: float | None) -> str:
    if not _ok(cos_min):
        return NOT_MEASURED
    if not _ok(control_min):
        return NOT_MEASURED
    return REPRODUCED if cos_min <= -0.5 and cos_min <= control_min - 0.3 else NOT_REPRODUCED


def verdict_logit_lens(mold_promoted: list[str] | None, gold_suppressed: list[str] | None) -> str:
    if not mold_promoted or not gold_suppressed:
        return NOT_MEASURED
    ok = failure_token_count(mold_promoted[:20]) >= 2 and failure_token_count(gold_suppressed[:20]) >= 2
    return REPRODUCED if ok else NOT_REPRODUCED


def verdict_emotion(slope: float, chance_slope: float, valence_r: float) -> str:
    """Balanced three-class diff-of-means vectors are anticorrelated by construction, so
    random emotion directions already give a slope near cos(v_Mold, v_Gold): the slope must
    beat that, and the axis must be valence (positive emotions at the Gold pole)."""
    if not (_ok(slope) and _ok(chance_slope) and _ok(valence_r)):
        return NOT_MEASURED
    return REPRODUCED if slope <= -0.5 and slope <= chance_slope - 0.1 and valence_r >= 0.5 else NOT_REPRODUCED


def valence_alignment(frame) -> float:
    """Pearson r across emotions between valence and cos(e, v_Gold) - cos(e, v_Mold)."""
    import numpy as np

    if frame is None or len(frame) < 3:
        return math.nan
    x = np.asarray(frame["valence"], float)
    y = np.asarray(frame["cos_gold"], float) - np.asarray(frame["cos_mold"], float)
    if x.std() == 0 or y.std() == 0:
        return math.nan
    return float(np.corrcoef(x, y)[0, 1])


def verdict_tracking(d_gold: float, d_mold: float, naive_d_gold: float | None, naive_d_mold: float | None) -> str:
    if not (_ok(d_gold) and _ok(d_mold)):
        return NOT_MEASURED
    trained = min(abs(d_gold), abs(d_mold))
    if trained < 1.0:
        return NOT_REPRODUCED
    if _ok(naive_d_gold) and _ok(naive_d_mold):
        naive = max(abs(naive_d_gold), abs(naive_d_mold))
        return REPRODUCED if naive <= trained - 0.5 else NOT_REPRODUCED
    return NOT_MEASURED


def verdict_steering(mold: dict | None, gold: dict | None) -> str:
    if not mold or not gold:
        return NOT_MEASURED
    m_hi, g_lo = _num(mold.get("ci_hi")), _num(gold.get("ci_lo"))
    if not (_ok(m_hi) and _ok(g_lo)):
        return NOT_MEASURED
    return REPRODUCED if m_hi < 0 and g_lo > 0 else NOT_REPRODUCED
