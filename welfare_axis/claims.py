"""The claims table: each claim of the study, what a run measured, and a verdict from the
thresholds stated here (and printed in the report and claims.json) before any run.

Every verdict compares the trained vectors with matched controls, not with zero: the
maze-naive u_* at the same layer, a shuffled-label or random-direction null, and for
steering a positive control (a valence direction) that must move sentiment before a
failure to move it can count. Claims 1 and 4 use the whitened space (see
probes/analyze.py for why); claim 5 steers with the raw vectors, scaled to a stated
fraction of the residual norm.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

REPRODUCED, NOT_REPRODUCED, NOT_MEASURED = "reproduced", "not reproduced", "not measured"

# Stated before any run; every rule below reads these.
ANTIPARALLEL_MAX = -0.5  # cos on the held-out half must be at most this
NAIVE_MARGIN = 0.2  # ... and this much below the naive u_* at the same layer
TRACKING_MIN_D = 1.0  # signed d on both vectors
TRACKING_NAIVE_MARGIN = 0.5
EMOTION_MAX_SLOPE = -0.5


@dataclass(frozen=True)
class Threshold:
    id: int
    claim: str
    paper: str
    rule: str


THRESHOLDS = (
    Threshold(1, "v_Mold and v_Gold are nearly antiparallel",
              "min over layers of cos(v_Mold, v_Gold) in [-0.95, -0.84]; naive controls u_* only [-0.23, -0.13]; layer mean -0.21",
              f"whitened vectors; the layer of the minimum is chosen on half A of the mazes and the cosine read on half B: "
              f"reproduced if it is <= {ANTIPARALLEL_MAX}, below the shuffled-label 2.5th percentile at that layer, and at least "
              f"{NAIVE_MARGIN} below cos(u_Mold, u_Gold) of the naive model at that layer"),
    Threshold(2, "Logit lens: v_Mold promotes failure tokens, v_Gold suppresses them",
              '"cannot", "impossible", "does not exist" among v_Mold\'s top tokens',
              "tokens ranked by cosine with the unembedding rows; failure score = mean percentile rank of the failure-stem tokens; at the "
              "paper's lens layer floor(5L/6): reproduced if v_Mold's score is above the random directions' 97.5th percentile and above "
              "u_Mold's, and v_Gold's is below the random 2.5th percentile and below u_Gold's"),
    Threshold(3, "Emotion vectors line up on one valence axis",
              "cos with v_Gold vs cos with v_Mold across emotions: slope near -1; control vectors show no pattern",
              f"emotion vectors of the maze-naive model at floor(2L/3): reproduced if the slope is <= {EMOTION_MAX_SLOPE}, the valence "
              "alignment r (valence vs cos(e, v_Gold) - cos(e, v_Mold)) has a bootstrap CI above 0, is above the 97.5th percentile of "
              "randomly oriented pairs with the same cos(v_Mold, v_Gold), and is above the naive u_*'s r"),
    Threshold(4, "Projections track goal achievement",
              "Cohen's d > 1.6 between Gold-final and Mold-final trajectories after training, |d| < 0.12 before",
              f"whitened projections at l*, within final letter x length: reproduced if the signed d (expected direction) is >= {TRACKING_MIN_D} on both v_Gold "
              f"and v_Mold and the naive model's largest |d| on u_* is at least {TRACKING_NAIVE_MARGIN} smaller"),
    Threshold(5, "Steering the naive model moves self-reported sentiment",
              "+0.71 per unit alpha for v_Gold, -0.65 for v_Mold (best layer); norm-matched controls flat",
              "generated self-reports at the steering screen's best layer (largest z(v_Gold) - z(v_Mold), z in SDs of the random "
              "directions at that layer, chosen on half A of the prompts; slopes on half B): "
              "reproduced if v_Mold's slope is below u_Mold's and below the 2.5th percentile of >= 10 random directions, with the paired "
              "CI of v_Mold - u_Mold below 0, and v_Gold mirrored; trusted only if the valence positive control's slope clears "
              "the random 97.5th percentile (else not measured)"),
    Threshold(6, "Robust to emoji swap, scale, base vs instruct, algorithm, LoRA vs full, SFT",
              "effects survive all variations",
              "not run by one reproduce run (needs several trainings); compare runs of reproduce --training rl / sft / sft+rl"),
)


@dataclass
class ClaimResult:
    id: int
    claim: str
    verdict: str
    value: float  # the headline number the rule reads
    measured: str  # what was measured, with metric and layer
    controls: str  # the matched controls
    threshold: str
    caveat: str = ""  # what limits the verdict's power (e.g. vectors below the reliability target)

    def to_dict(self) -> dict:
        return asdict(self)


def _f(x) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def _ok(*xs) -> bool:
    return all(math.isfinite(_f(x)) for x in xs)


def _fmt(x) -> str:
    return f"{_f(x):+.2f}" if _ok(x) else "—"


def verdict_antiparallel(half_b: float, shuffled_lo: float, naive: float) -> str:
    if not _ok(half_b, shuffled_lo, naive):
        return NOT_MEASURED
    ok = half_b <= ANTIPARALLEL_MAX and half_b < shuffled_lo and half_b <= naive - NAIVE_MARGIN
    return REPRODUCED if ok else NOT_REPRODUCED


def verdict_logit_lens(v_mold: float, u_mold: float, v_gold: float, u_gold: float, random_lo: float, random_hi: float) -> str:
    if not _ok(v_mold, u_mold, v_gold, u_gold, random_lo, random_hi):
        return NOT_MEASURED
    ok = v_mold > random_hi and v_mold > u_mold and v_gold < random_lo and v_gold < u_gold
    return REPRODUCED if ok else NOT_REPRODUCED


def verdict_emotion(slope: float, r: float, r_ci_lo: float, null_r_hi: float, naive_r: float) -> str:
    if not _ok(slope, r, r_ci_lo, null_r_hi, naive_r):
        return NOT_MEASURED
    ok = slope <= EMOTION_MAX_SLOPE and r_ci_lo > 0 and r > null_r_hi and r > naive_r
    return REPRODUCED if ok else NOT_REPRODUCED


def verdict_tracking(d_gold: float, d_mold: float, naive_d_gold: float, naive_d_mold: float) -> str:
    """Signed: both d must be in the expected direction (the d's are k-final minus other-final)."""
    if not _ok(d_gold, d_mold, naive_d_gold, naive_d_mold):
        return NOT_MEASURED
    trained = min(d_gold, d_mold)
    ok = trained >= TRACKING_MIN_D and max(abs(naive_d_gold), abs(naive_d_mold)) <= trained - TRACKING_NAIVE_MARGIN
    return REPRODUCED if ok else NOT_REPRODUCED


def verdict_steering(s: dict | None) -> str:
    """`s`: the steering claim inputs (steering.claim.claim_inputs): slopes, random percentiles, paired CIs, positive control."""
    if not s:
        return NOT_MEASURED
    need = ("v_mold", "u_mold", "v_gold", "u_gold", "random_lo", "random_hi", "diff_mold_hi", "diff_gold_lo", "valence")
    if not _ok(*(s.get(k) for k in need)):
        return NOT_MEASURED
    if not s["valence"] > s["random_hi"]:
        return NOT_MEASURED  # the positive control did not move sentiment: this run could not have seen an effect
    mold = s["v_mold"] < s["u_mold"] and s["v_mold"] < s["random_lo"] and s["diff_mold_hi"] < 0
    gold = s["v_gold"] > s["u_gold"] and s["v_gold"] > s["random_hi"] and s["diff_gold_lo"] > 0
    return REPRODUCED if mold and gold else NOT_REPRODUCED


def evaluate(analysis: dict, steering: dict | None) -> list[ClaimResult]:
    """All six claims from an analyze summary.json and the steering claim inputs (None if not run)."""
    th = {t.id: t for t in THRESHOLDS}
    out = []
    space = analysis.get("verdict_space", "whitened")

    a = (analysis.get("antiparallel") or {}).get(space) or {}
    at = a.get("at_split_layer") or {}
    full = a.get("trained") or {}
    out.append(ClaimResult(1, th[1].claim, verdict_antiparallel(at.get("trained_half_b"), at.get("shuffled_labels_lo"), at.get("naive")),
                           _f(at.get("trained_half_b")),
                           f"{space}: layer {at.get('layer', '—')} (min on half A) cos on half B {_fmt(at.get('trained_half_b'))} "
                           f"{_ci(at.get('trained_half_b_ci'))}; "
                           f"full data min {_fmt(full.get('min'))} at layer {full.get('argmin', '—')}, mean {_fmt(full.get('mean'))}",
                           f"naive u_* at layer {at.get('layer', '—')}: {_fmt(at.get('naive'))} {_ci(at.get('naive_ci'))}; "
                           f"shuffled labels 2.5th pct {_fmt(at.get('shuffled_labels_lo'))}",
                           th[1].rule))

    ll = analysis.get("logit_lens") or {}
    rows = ll.get("at_layer") or {}
    sc = {k: (rows.get(k) or {}).get("failure_score") for k in ("v_mold", "u_mold", "v_gold", "u_gold")}
    out.append(ClaimResult(2, th[2].claim, verdict_logit_lens(sc["v_mold"], sc["u_mold"], sc["v_gold"], sc["u_gold"], ll.get("random_lo"), ll.get("random_hi")),
                           _f(sc["v_mold"]),
                           f"layer {ll.get('layer', '—')}: failure score v_Mold {_fmt(sc['v_mold'])}, v_Gold {_fmt(sc['v_gold'])} (0.5 = chance)",
                           f"u_Mold {_fmt(sc['u_mold'])}, u_Gold {_fmt(sc['u_gold'])}; random directions 95% [{_fmt(ll.get('random_lo'))}, {_fmt(ll.get('random_hi'))}]",
                           th[2].rule))

    e = analysis.get("emotion") or {}
    t, n = e.get("trained") or {}, e.get("naive") or {}
    null = t.get("null") or {}
    r_ci = t.get("valence_r_ci") or [math.nan, math.nan]
    out.append(ClaimResult(3, th[3].claim, verdict_emotion(t.get("slope"), t.get("valence_r"), r_ci[0], null.get("valence_r_hi"), n.get("valence_r")),
                           _f(t.get("valence_r")),
                           f"layer {e.get('layer', '—')}: slope {_fmt(t.get('slope'))} {_ci(t.get('slope_ci'))}, valence r {_fmt(t.get('valence_r'))} {_ci(r_ci)}; "
                           f"Gold pole {', '.join((t.get('gold_pole') or [])[:3])}; Mold pole {', '.join((t.get('mold_pole') or [])[:3])}",
                           f"naive u_*: slope {_fmt(n.get('slope'))}, valence r {_fmt(n.get('valence_r'))}; random pairs: slope 95% "
                           f"[{_fmt(null.get('slope_lo'))}, {_fmt(null.get('slope_hi'))}], r 97.5th pct {_fmt(null.get('valence_r_hi'))}",
                           th[3].rule))

    tr = analysis.get("tracking") or {}
    ts = tr.get(space) or {}
    layers = tr.get("layer") or {}
    out.append(ClaimResult(4, th[4].claim, verdict_tracking(ts.get("trained_d_gold"), ts.get("trained_d_mold"), ts.get("naive_d_gold"), ts.get("naive_d_mold")),
                           min(_f(ts.get("trained_d_gold")), _f(ts.get("trained_d_mold"))),
                           f"{space}, layers gold {layers.get('gold', '—')} / mold {layers.get('mold', '—')}: d on v_Gold {_fmt(ts.get('trained_d_gold'))} "
                           f"{_ci(ts.get('trained_d_gold_ci'))}, on v_Mold {_fmt(ts.get('trained_d_mold'))} {_ci(ts.get('trained_d_mold_ci'))}",
                           f"naive on u_*: {_fmt(ts.get('naive_d_gold'))} {_ci(ts.get('naive_d_gold_ci'))} / {_fmt(ts.get('naive_d_mold'))} "
                           f"{_ci(ts.get('naive_d_mold_ci'))}; trained - naive (paired): gold {_ci(ts.get('trained_minus_naive_d_gold_ci'))}, "
                           f"mold {_ci(ts.get('trained_minus_naive_d_mold_ci'))}", th[4].rule))

    caveat = reliability_caveat(analysis)
    for r in out:
        if r.id in (1, 4):  # the two claims read the verdict-space vectors at the chosen layers
            r.caveat = caveat

    s = steering or {}
    out.append(ClaimResult(5, th[5].claim, verdict_steering(steering), _f(s.get("v_mold")),
                           f"layer {s.get('layer', '—')} ({s.get('layer_rule', '—')}; alpha 1 = {s.get('unit_ratio', '—')} x the mean residual "
                           f"norm {_f(s.get('residual_norm')):.1f}, alphas {sorted(map(float, s.get('alpha_in_residual_norms', {})))}), "
                           f"sentiment slope per unit alpha: v_Mold {_fmt(s.get('v_mold'))}, "
                           f"v_Gold {_fmt(s.get('v_gold'))}; paired v-u CIs: mold [{_fmt(s.get('diff_mold_lo'))}, {_fmt(s.get('diff_mold_hi'))}], "
                           f"gold [{_fmt(s.get('diff_gold_lo'))}, {_fmt(s.get('diff_gold_hi'))}]",
                           f"u_Mold {_fmt(s.get('u_mold'))}, u_Gold {_fmt(s.get('u_gold'))}; {s.get('n_random', 0)} random: 95% "
                           f"[{_fmt(s.get('random_lo'))}, {_fmt(s.get('random_hi'))}]; valence positive control {_fmt(s.get('valence'))}",
                           th[5].rule))
    out.append(ClaimResult(6, th[6].claim, NOT_MEASURED, math.nan, "—", "—", th[6].rule))
    return out


def reliability_caveat(analysis: dict) -> str:
    """One line naming the vectors whose split-half reliability at l* is below the target, with the N that would reach it."""
    rel = analysis.get("reliability_at_l_star") or {}
    low = [(name, rel["vectors"][name]) for name in rel.get("below_target", [])]
    if not low:
        return ""
    parts = [f"{name} {_f(r['split_half_cos']):.2f} at layer {r['layer']} (N {r['n_per_class']}/class; ~{r['n_per_class_for_target'] or 'inf'} "
             f"projected for {rel['target']})" for name, r in low]
    splits = f", mean of {rel['n_splits']} random maze splits" if rel.get("n_splits") else ""
    return (f"split-half reliability ({rel.get('space')}{splits}) below {rel.get('target')}: " + "; ".join(parts)
            + ": a 'not reproduced' may partly be too few samples")


def _ci(ci) -> str:
    return f"[{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else ""
