"""Hypotheses H1-H4, each a prediction with its measurement and threshold stated here
before any run, and one verdict rule: supported when the CI lies wholly on the predicted side of
the threshold, contradicted when it lies wholly on the other side, inconclusive when it
contains the threshold, not measured when the measurement is missing. Modelled on
welfare_axis/claims.py (the study's claims); printed in every mechanics JSON.

Measurements without a sampling unit (the anatomy of one weight delta) have no CI: they are
read as a point, lo = hi = value, so they are never inconclusive; that is stated in their rule.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

SUPPORTED, CONTRADICTED, INCONCLUSIVE, NOT_MEASURED = "supported", "contradicted", "inconclusive", "not measured"
ABOVE, BELOW = "above", "below"


@dataclass(frozen=True)
class Hypothesis:
    id: str
    prediction: str
    measurement: str  # what is read, in words
    key: str  # where the measurement sits in the mechanics summaries ("onestep.sft_to_rl_off_target_kl")
    threshold: float
    direction: str  # the predicted side of the threshold: ABOVE or BELOW


HYPOTHESES = (
    Hypothesis("H1", "motive reinforcement: per unit of on-target improvement, SFT changes the model more off target than RL",
               "one-step probe: mean off-target KL(theta || theta + step) of the SFT step over that of the RL step, each scaled to "
               "the same rise of its own target's log-probability (summary 'match': own; or, with scripted, of the scripted "
               "moves'); ratio of means, bootstrap CI over batches (paired)",
               "onestep.sft_to_rl_off_target_kl", 1.0, ABOVE),
    Hypothesis("H1m", "motive reinforcement, over training: at matched on-target progress SFT has drifted further off target than RL",
               "matched RL vs SFT (welfare-axis mechanics matched; not run by reproduce): pooled off-target KL(start || checkpoint) "
               "of the SFT arm over the RL arm's at the largest progress (first-move episode value) both reach, interpolated on each arm's "
               "curve; bootstrap CI resampling held-out mazes and off-target prompts",
               "matched.sft_to_rl_off_target_kl", 1.0, ABOVE),
    Hypothesis("H5m", "recruitment, the title question: per unit of task progress RL makes v_Mold and v_Gold more antiparallel "
               "than SFT does",
               "matched RL vs SFT with --extract, under the protocol's title-question rules (probes/protocol.py, TitleQuestion): "
               "RL's change of the antiparallelism (-min over the band of cos(v_Mold, v_Gold)) per unit of progress (the first "
               "move's expected episode value) minus SFT's, at the largest progress both reach (supported: RL more; "
               "contradicted: RL less; inconclusive: no difference detected); not measured unless both arms learned; "
               "bootstrap CI resampling held-out mazes and the extraction's trajectories together",
               "matched.axis_contrast.contrast.antiparallelism", 0.0, ABOVE),
    Hypothesis("H2", "gating: RL's MLP gradient mass on units whose gate was closed is far below their share of units",
               "one-step probe, RL gradient: closed share of gradient mass / closed share of (token, unit) pairs, all layers "
               "pooled per batch; bootstrap CI over batches",
               "onestep.gating.rl.gating_ratio", 0.5, BELOW),
    Hypothesis("H2b", "gating: more so for RL than for SFT",
               "one-step probe: RL gating ratio minus SFT gating ratio on the same batch; bootstrap CI over batches",
               "onestep.rl_minus_sft_gating", 0.0, BELOW),
    Hypothesis("H3", "depth: the update mass spreads over all layers",
               "anatomy of RL's own update (RL's start model -> trained; the whole training when RL did not follow SFT): "
               "effective number of blocks carrying ||dW||^2 (exp of the entropy of the per-block "
               "shares) over the number of blocks training could change (LoRA on the top k blocks: k, else all); one delta, "
               "no CI (read as a point)",
               "anatomy.depth_spread", 0.5, ABOVE),
    Hypothesis("H4", "reweighting, not writing: the update is low-rank",
               "anatomy of the same update as H3: median over changed weight matrices of the entropy effective rank of dW over min(m, n); full fine-tunes "
               "only (a LoRA delta has rank <= r by construction: not measured); one delta, no CI (read as a point)",
               "anatomy.low_rank_test", 0.1, BELOW),
    Hypothesis("H4b", "reweighting, not writing: the trained concept vectors lie along the naive model's",
               "recruitment over the whole training (reproduce; RL's own update: mechanics matched's RL arm): mean over layers 1..L-1 of cos(v_k, u_k), the smaller of k = mold and k = gold; bootstrap CI over layers",
               "recruitment.min_mean_cos", 0.5, ABOVE),
)


@dataclass
class HypothesisResult:
    id: str
    prediction: str
    measurement: str
    threshold: float
    direction: str
    value: float
    ci_lo: float
    ci_hi: float
    verdict: str

    def to_dict(self) -> dict:
        return asdict(self)


def _finite(*xs) -> bool:
    try:
        return all(math.isfinite(float(x)) for x in xs)
    except (TypeError, ValueError):
        return False


def verdict(ci_lo, ci_hi, threshold: float, direction: str) -> str:
    """The rule every hypothesis uses (see the module docstring); a CI touching the threshold is inconclusive."""
    if direction not in (ABOVE, BELOW):
        raise ValueError(f"direction must be {ABOVE!r} or {BELOW!r}, got {direction!r}")
    if not _finite(ci_lo, ci_hi):
        return NOT_MEASURED
    lo, hi = sorted((float(ci_lo), float(ci_hi)))
    above, below = lo > threshold, hi < threshold
    if direction == BELOW:
        above, below = below, above
    return SUPPORTED if above else CONTRADICTED if below else INCONCLUSIVE


def lookup(summaries: dict, key: str) -> dict | None:
    """The {"value", "ci_lo", "ci_hi"} at a dotted key of the summaries; a bare number is read as a point."""
    node = summaries
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    if isinstance(node, dict):
        return node
    if _finite(node):
        return {"value": float(node), "ci_lo": float(node), "ci_hi": float(node)}
    return None


def evaluate(summaries: dict) -> list[HypothesisResult]:
    """Every hypothesis from `summaries` ({"onestep": ..., "anatomy": ..., "recruitment": ...}; missing ones are not measured)."""
    out = []
    for h in HYPOTHESES:
        m = lookup(summaries, h.key) or {}
        lo, hi = m.get("ci_lo", math.nan), m.get("ci_hi", math.nan)
        out.append(HypothesisResult(h.id, h.prediction, h.measurement, h.threshold, h.direction,
                                    float(m.get("value", math.nan)), float(lo), float(hi), verdict(lo, hi, h.threshold, h.direction)))
    return out
