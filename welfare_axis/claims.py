"""The claims table: each claim of the study, what a run measured, and a verdict from the
rules of the frozen protocol (probes/protocol.py; docs/protocol.md states them in words and
logs every change).

Every verdict compares the trained vectors with matched controls, not with zero: the
maze-naive model at the same layer and equal N, and structured null directions (shuffled-label
differences of means, Gaussian directions with the layer's covariance, isotropic ones; a
verdict must clear every family). Where the data picks a layer, the nulls go through the same
pick, so their p-values are family-wise. Claim 5 also needs its positive control to clear the
nulls before a failure can count.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from probes.protocol import PROTOCOL, Protocol

REPRODUCED, NOT_REPRODUCED, NOT_MEASURED = "reproduced", "not reproduced", "not measured"
NOT_MEASURABLE = "not measurable on this model"  # the naive model does not show the behaviour at all (below its floor)


@dataclass(frozen=True)
class Threshold:
    id: int | str  # 1-6, and "5b"-"5d" for the behaviour claims
    claim: str
    paper: str
    rule: str


def thresholds(p: Protocol = PROTOCOL) -> tuple[Threshold, ...]:
    """Each claim's rule in words, generated from the protocol so the text cannot drift from the code."""
    a, c1, c3, c4 = p.nulls.alpha, p.claim1, p.claim3, p.claim4
    fams = "/".join(p.nulls.families)
    return (
        Threshold(1, "v_Mold and v_Gold are nearly antiparallel",
                  "min over layers of cos(v_Mold, v_Gold) in [-0.95, -0.84]; naive controls u_* only [-0.23, -0.13]; layer mean -0.21",
                  f"{c1.primary_space} space; mazes split into a whitener part ({c1.whitener_fraction:.2f}), half A and half B; the layer of "
                  f"the minimum cosine over the band is chosen on half A and the cosine read on half B: reproduced if it is <= {c1.max_cos}, "
                  f"its family-wise p < {a} against every null family ({fams}, {p.nulls.draws} draws each, through the same pick), "
                  f"and it is at least {c1.naive_margin} below the naive model's half-B cosine at that layer (equal N per class)"),
        Threshold(2, "Logit lens: v_Mold promotes failure tokens, v_Gold suppresses them",
                  '"cannot", "impossible", "does not exist" among v_Mold\'s top tokens',
                  f"failure score (mean percentile rank of failure-stem tokens by cosine with the unembedding rows) at the fixed lens layer "
                  f"floor({p.fixed.logit_lens:.3f} L): reproduced if v_Mold's score has p < {a} (high side) and v_Gold's p < {a} (low side) "
                  f"against every null family ({fams}), v_Mold above u_Mold and v_Gold below u_Gold"),
        Threshold(3, "Emotion vectors line up on one valence axis",
                  "cos with v_Gold vs cos with v_Mold across emotions: slope near -1; control vectors show no pattern",
                  f"emotion vectors of the maze-naive model at floor({p.fixed.emotion:.3f} L): reproduced if the slope is <= {c3.max_slope}, "
                  f"the valence alignment r (valence vs cos(e, v_Gold) - cos(e, v_Mold)) has a bootstrap CI low end > {c3.r_ci_low_above}, "
                  f"the valence slope (OLS of that gap on valence) has p < {a} against direction pairs from every null family ({fams}), "
                  "and the valence slope is above the naive u_*'s (the gap is divided by |unit(v_Gold) - unit(v_Mold)| for every "
                  "pair, so a pair's own antiparallelism does not count)"),
        Threshold(4, "Projections track goal achievement",
                  "Cohen's d > 1.6 between Gold-final and Mold-final trajectories after training, |d| < 0.12 before",
                  f"{c4.primary} on paired trajectories ({c4.n_states} maze states; the same prompt, only the final move differs), "
                  f"the trained v_* at l* ({c4.layer_space} layer rule) on both models' activations: reproduced if the {p.ci_level:.0%} CI's "
                  f"low end is >= {c4.trained_ci_low_min} for d_Gold and d_Mold on the trained model and both CIs lie inside "
                  f"(-{c4.naive_ci_abs_max}, +{c4.naive_ci_abs_max}) on the naive model (no tracking before, in either direction)"),
        Threshold(5, "Steering the naive model moves self-reported sentiment",
                  "+0.71 per unit alpha for v_Gold, -0.65 for v_Mold (best layer); norm-matched controls flat",
                  f"one welfare axis unit(v_Gold) - unit(v_Mold); primary statistic: the derivative of the teacher-forced sentiment "
                  f"log-odds per unit alpha (alpha 1 = {p.claim5.unit_ratio} x the residual norm), max z over the band: reproduced if "
                  f"its family-wise p < {a} against every null family ({fams}), at the selected layer (the largest z of the weakest "
                  f"family) its z clears every family's 95th percentile of null maxima, and steering with +-{p.claim5.confirm_alpha} "
                  "there moves the log-odds up (prompt-cluster t CI above 0); not measured unless the valence positive control "
                  "clears every family the same way"),
        *(_behaviour_threshold(b, p) for b in p.behaviours),
        Threshold(6, "Robust to emoji swap, scale, base vs instruct, algorithm, LoRA vs full, SFT",
                  "effects survive all variations",
                  f"welfare-axis robustness: every claim's verdict in named variants of one study config; reproduced if every "
                  f"claim the reference variant ({p.claim6.reference}) reproduces is also reproduced in each of "
                  f"{', '.join(p.claim6.required)}; not measured if one of those did not run, the reference reproduces no claim"
                  + (", or one of them (the reference included) did not learn the task (trained_eval: first-move expected "
                     "reward minus the naive model's, CI not above 0)" if p.claim6.learning_gate else "")),
    )


def _behaviour_threshold(b, p: Protocol) -> Threshold:
    a, fams = p.nulls.alpha, "/".join(p.nulls.families)
    control = (f"; not measured unless the positive control ({b.positive_control}) clears every family the same way"
               if b.positive_control else "; no positive control exists for this behaviour")
    paper = {"backtracking": "more backtracking under +v_Mold", "refusal": "more refusal under +v_Mold",
             "confidence": "lower P(True) confidence under +v_Mold"}[b.behaviour]
    return Threshold(b.id, f"Steering the naive model moves {b.behaviour}", paper,
                     f"the welfare axis on {b.n_items} items; statistic: the derivative per unit alpha of the teacher-forced "
                     f"log-odds of {' / '.join(repr(t) for t in b.toward)} vs {' / '.join(repr(t) for t in b.away)}; "
                     f"not measurable on this model if {b.floor_metric} < {b.floor}; else reproduced if the welfare axis raises it "
                     f"with family-wise p < {a} against every null family ({fams}), clears every family's 95th percentile at the "
                     f"selected layer, and steering with +-{p.claim5.confirm_alpha} there moves it up (t CI above 0){control}")


THRESHOLDS = thresholds()
CI_OF = {3: "valence r", 4: "the smaller trained d", 5: "finite-step log-odds change", "5b": "finite-step log-odds change",
         "5c": "finite-step log-odds change", "5d": "finite-step log-odds change"}


@dataclass
class ClaimResult:
    id: int | str
    claim: str
    verdict: str
    value: float  # the headline number the rule reads
    measured: str  # what was measured, with metric and layer
    controls: str  # the matched controls
    threshold: str
    caveat: str = ""  # what limits the verdict's power (e.g. vectors below the reliability target)
    ci: list | None = None  # the interval the rule reads, where it reads one (CI_OF says of what)

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


def _clears(nulls: dict, key: str, p: Protocol) -> bool | None:
    """True if every protocol family has p < alpha under `key`; None if a family is missing or not finite."""
    ps = [_f((nulls.get(f) or {}).get(key)) for f in p.nulls.families]
    if not ps or not all(math.isfinite(x) for x in ps):
        return None
    return all(x < p.nulls.alpha for x in ps)


def _ps(nulls: dict, key: str = "p") -> str:
    return ", ".join(f"{f} p={_f((v or {}).get(key)):.3f}" for f, v in (nulls or {}).items())


def verdict_antiparallel(c: dict, p: Protocol = PROTOCOL) -> str:
    """c: claim 1's statistics in the primary space (probes.antiparallel), with naive_at_layer."""
    half_b, naive = c.get("cos_half_b"), c.get("naive_at_layer")
    clears = _clears(c.get("nulls") or {}, "p", p)
    if not _ok(half_b, naive) or clears is None:
        return NOT_MEASURED
    ok = half_b <= p.claim1.max_cos and clears and half_b <= naive - p.claim1.naive_margin
    return REPRODUCED if ok else NOT_REPRODUCED


def verdict_logit_lens(c: dict, p: Protocol = PROTOCOL) -> str:
    nulls = c.get("nulls") or {}
    mold, gold = _clears(nulls, "p_mold", p), _clears(nulls, "p_gold", p)
    if not _ok(c.get("v_mold"), c.get("u_mold"), c.get("v_gold"), c.get("u_gold")) or mold is None or gold is None:
        return NOT_MEASURED
    ok = mold and gold and c["v_mold"] > c["u_mold"] and c["v_gold"] < c["u_gold"]
    return REPRODUCED if ok else NOT_REPRODUCED


def verdict_emotion(c: dict, p: Protocol = PROTOCOL) -> str:
    ci = c.get("valence_r_ci") or [math.nan, math.nan]
    clears = _clears(c.get("nulls") or {}, "p", p)
    if not _ok(c.get("slope"), c.get("valence_slope"), ci[0], c.get("naive_valence_slope")) or clears is None:
        return NOT_MEASURED
    ok = c["slope"] <= p.claim3.max_slope and ci[0] > p.claim3.r_ci_low_above and clears and c["valence_slope"] > c["naive_valence_slope"]
    return REPRODUCED if ok else NOT_REPRODUCED


def verdict_tracking(c: dict, p: Protocol = PROTOCOL) -> str:
    """c: claim 4's primary (pooled raw d with CIs on paired trajectories, the same vector on both models)."""
    lows = [(c.get(f"trained_d_{k}_ci") or [math.nan])[0] for k in ("gold", "mold")]
    naive = [x for k in ("gold", "mold") for x in (c.get(f"naive_d_{k}_ci") or [math.nan, math.nan])]
    if not _ok(*lows, *naive):
        return NOT_MEASURED
    ok = min(lows) >= p.claim4.trained_ci_low_min and max(abs(x) for x in naive) < p.claim4.naive_ci_abs_max
    return REPRODUCED if ok else NOT_REPRODUCED


def verdict_steering(s: dict | None, p: Protocol = PROTOCOL) -> str:
    """s: claim 5's primary (steering.claim: the welfare axis and the valence positive control against the nulls,
    and the finite-alpha confirmation at the selected layer)."""
    if not s:
        return NOT_MEASURED
    axis, control = s.get("axis") or {}, s.get("valence") or {}
    positive, clears = _passes(control, p), _passes(axis, p)
    if positive is None or clears is None:
        return NOT_MEASURED
    if not positive:
        return NOT_MEASURED  # the positive control did not clear the nulls: this run could not have seen an effect
    if not clears:
        return NOT_REPRODUCED
    ci = (s.get("confirm") or {}).get("ci") or [math.nan, math.nan]
    if not _ok(ci[0]):
        return NOT_MEASURED
    return REPRODUCED if ci[0] > 0 else NOT_REPRODUCED


def verdict_behaviour(b: dict | None, p: Protocol = PROTOCOL) -> str:
    """b: one behaviour claim's read-out (steering.behaviour_claims): its floor, the axis and any positive control
    against the nulls, and the finite step."""
    if not b:
        return NOT_MEASURED
    if not _ok((b.get("floor") or {}).get("value")):
        return NOT_MEASURED  # the floor itself could not be read (e.g. no benign or no harmful item): no statement about the model
    if not b.get("measurable"):
        return NOT_MEASURABLE
    if "control" in b and not _passes(b["control"], p):
        return NOT_MEASURED  # the positive control did not clear the nulls: this run could not have seen an effect
    clears = _passes(b.get("axis") or {}, p)
    if clears is None:
        return NOT_MEASURED
    ci = (b.get("confirm") or {}).get("ci") or [math.nan, math.nan]
    if not clears:
        return NOT_REPRODUCED
    if not _ok(ci[0]):
        return NOT_MEASURED
    return REPRODUCED if ci[0] > 0 else NOT_REPRODUCED


def verdict_robustness(matrix: dict | None, p: Protocol = PROTOCOL) -> tuple[str, list]:
    """(claim 6's verdict, the claims that survive or fail): `matrix` is {variant: {"claims": claims.json rows,
    "learned": whether its training learned the task (robustness.json's variant entry)}}."""
    c6 = p.claim6
    deciding = (c6.reference, *c6.required)
    if not matrix or any(v not in matrix for v in deciding) or (c6.learning_gate and not_learned(matrix, p)):
        return NOT_MEASURED, []
    verdicts = {v: {r["id"]: r["verdict"] for r in entry["claims"]} for v, entry in matrix.items()}
    held = [cid for cid, v in verdicts[c6.reference].items() if v == REPRODUCED and cid != 6]
    if not held:
        return NOT_MEASURED, []
    survival = [(cid, all(verdicts[v].get(cid) == REPRODUCED for v in c6.required)) for cid in held]
    return (REPRODUCED if all(ok for _, ok in survival) else NOT_REPRODUCED), survival


def not_learned(matrix: dict, p: Protocol = PROTOCOL) -> list[str]:
    """The deciding variants (reference and required) that ran but did not learn the task (or whose learning is unknown)."""
    return [v for v in (p.claim6.reference, *p.claim6.required) if v in matrix and not (matrix[v].get("learned") or {}).get("learned")]


def _robustness_result(matrix: dict | None, t: Threshold, p: Protocol) -> ClaimResult:
    verdict, survival = verdict_robustness(matrix, p)
    ran = ", ".join(matrix) if matrix else "no robustness matrix for this run"
    measured = "; ".join(f"claim {cid} {'survives' if ok else 'fails in some variant'}" for cid, ok in survival) or "—"
    failed = not_learned(matrix, p) if matrix and p.claim6.learning_gate else []
    if failed:
        measured = f"did not learn the task: {', '.join(failed)}"
    value = sum(ok for _, ok in survival) / len(survival) if survival else math.nan
    return ClaimResult(6, t.claim, verdict, value, f"variants: {ran}; {measured}", "every variant's own controls", t.rule)


def _passes(d: dict, p: Protocol) -> bool | None:
    """A direction's family test: p < alpha against every family, and at its selected layer a z above every family's
    95th percentile of null maxima (`clears_at_layer`); None when not measured."""
    clears = _clears(d.get("nulls") or {}, "p", p)
    if clears is None or d.get("clears_at_layer") is None:
        return None
    return clears and bool(d["clears_at_layer"])


def evaluate(analysis: dict, steering: dict | None, p: Protocol = PROTOCOL, behaviours: dict | None = None,
             robustness: dict | None = None) -> list[ClaimResult]:
    """Every claim from an analyze summary.json, claim 5's inputs, claims 5b-5d's (behaviour_claims.json) and the
    robustness matrix this run belongs to ({variant: {"claims": claims.json rows, "learned": ...}}; None: claim 6 not measured)."""
    th = {t.id: t for t in thresholds(p)}
    vi = analysis.get("verdict_inputs") or {}
    space = p.claim1.primary_space
    c1 = ((vi.get("claim1") or {}).get("trained") or {}).get(space) or {}
    c2, c3, c4 = vi.get("claim2") or {}, vi.get("claim3") or {}, vi.get("claim4") or {}
    band = vi.get("band") or []
    band_txt = f"band {band[0]}-{band[-1]}" if band else "band —"
    out = [
        ClaimResult(1, th[1].claim, verdict_antiparallel(c1, p), _f(c1.get("cos_half_b")),
                    f"{space}, {band_txt}: layer {c1.get('layer', '—')} (min on half A, {_fmt(c1.get('cos_half_a'))}); cos on half B "
                    f"{_fmt(c1.get('cos_half_b'))}; whitened (secondary): "
                    f"{_fmt((((vi.get('claim1') or {}).get('trained') or {}).get('whitened') or {}).get('cos_half_b'))}",
                    f"naive at that layer (equal N): {_fmt(c1.get('naive_at_layer'))}; nulls through the same pick: {_ps(c1.get('nulls'))}",
                    th[1].rule),
        ClaimResult(2, th[2].claim, verdict_logit_lens(c2, p), _f(c2.get("v_mold")),
                    f"layer {c2.get('layer', '—')}: failure score v_Mold {_fmt(c2.get('v_mold'))}, v_Gold {_fmt(c2.get('v_gold'))} (0.5 = chance)",
                    f"u_Mold {_fmt(c2.get('u_mold'))}, u_Gold {_fmt(c2.get('u_gold'))}; v_Mold vs nulls: {_ps(c2.get('nulls'), 'p_mold')}; "
                    f"v_Gold vs nulls: {_ps(c2.get('nulls'), 'p_gold')}", th[2].rule),
        ClaimResult(3, th[3].claim, verdict_emotion(c3, p), _f(c3.get("valence_slope")),
                    f"layer {c3.get('layer', '—')}: slope {_fmt(c3.get('slope'))}, valence r {_fmt(c3.get('valence_r'))} {_ci(c3.get('valence_r_ci'))}, "
                    f"valence slope {_fmt(c3.get('valence_slope'))}",
                    f"naive u_*: r {_fmt(c3.get('naive_valence_r'))}, valence slope {_fmt(c3.get('naive_valence_slope'))}; null pairs (valence "
                    f"slope): {_ps(c3.get('nulls'))}", th[3].rule),
        ClaimResult(4, th[4].claim, verdict_tracking(c4, p),
                    min(_f(c4.get("trained_d_gold")), _f(c4.get("trained_d_mold"))),
                    f"pooled raw d, layers gold {((analysis.get('tracking') or {}).get('layer') or {}).get('gold', '—')} / mold "
                    f"{((analysis.get('tracking') or {}).get('layer') or {}).get('mold', '—')}: trained d_Gold {_fmt(c4.get('trained_d_gold'))} "
                    f"{_ci(c4.get('trained_d_gold_ci'))}, d_Mold {_fmt(c4.get('trained_d_mold'))} {_ci(c4.get('trained_d_mold_ci'))}",
                    f"naive on the same v_*: d_Gold {_fmt(c4.get('naive_d_gold'))} {_ci(c4.get('naive_d_gold_ci'))}, d_Mold "
                    f"{_fmt(c4.get('naive_d_mold'))} {_ci(c4.get('naive_d_mold_ci'))}", th[4].rule),
    ]
    caveat = reliability_caveat(analysis)
    for r in out:
        if r.id in (1, 4):  # the two claims read the vectors at the chosen layers
            r.caveat = caveat
    out.append(_steering_result(steering, th[5], p))
    out += [_behaviour_result(((behaviours or {}).get("claims") or {}).get(b.id), th[b.id], p) for b in p.behaviours]
    out[2].ci = c3.get("valence_r_ci")
    worse = min(("gold", "mold"), key=lambda k: _f(c4.get(f"trained_d_{k}")) if _ok(c4.get(f"trained_d_{k}")) else math.inf)
    out[3].ci = c4.get(f"trained_d_{worse}_ci")
    out.append(_robustness_result(robustness, th[6], p))
    return out


def _steering_result(s: dict | None, t: Threshold, p: Protocol) -> ClaimResult:
    s = s or {}
    axis, val, conf = s.get("axis") or {}, s.get("valence") or {}, s.get("confirm") or {}
    return ClaimResult(5, t.claim, verdict_steering(s or None, p), _f(axis.get("z")),
                       f"welfare axis: selected layer {axis.get('layer', '—')}, z {_fmt(axis.get('z'))} (d log-odds per unit alpha "
                       f"{_fmt(axis.get('effect'))}); finite alpha +-{conf.get('alpha', '—')}: log-odds change {_fmt(conf.get('mean'))} "
                       f"{_ci(conf.get('ci'))}",
                       f"nulls (max over band): {_ps(axis.get('nulls'))}; valence positive control: layer {val.get('layer', '—')}, "
                       f"z {_fmt(val.get('z'))}, {_ps(val.get('nulls'))}", t.rule, ci=conf.get("ci"))


def _behaviour_result(b: dict | None, t: Threshold, p: Protocol) -> ClaimResult:
    b = b or {}
    floor, axis, conf, ctrl = b.get("floor") or {}, b.get("axis") or {}, b.get("confirm") or {}, b.get("control")
    measured = f"floor: {floor.get('metric', '—')} = {_fmt(floor.get('value'))} (needs >= {floor.get('floor', '—')})"
    if axis:
        measured += (f"; welfare axis: selected layer {axis.get('layer', '—')}, z {_fmt(axis.get('z'))} (d log-odds per unit alpha "
                     f"{_fmt(axis.get('effect'))}); finite alpha +-{conf.get('alpha', '—')}: log-odds change {_fmt(conf.get('mean'))} "
                     f"{_ci(conf.get('ci'))}")
    controls = f"nulls (max over band): {_ps(axis.get('nulls'))}" if axis else "— (not run: below the floor)" if b else "—"
    if ctrl:
        controls += f"; positive control: layer {ctrl.get('layer', '—')}, z {_fmt(ctrl.get('z'))}, {_ps(ctrl.get('nulls'))}"
    value = _f(axis.get("z")) if axis else _f(floor.get("value"))
    return ClaimResult(t.id, t.claim, verdict_behaviour(b or None, p), value, measured, controls, t.rule, ci=conf.get("ci"))


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
