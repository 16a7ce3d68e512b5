"""Claims 5b-5d: does steering the maze-naive model along the welfare axis move backtracking, refusal and confidence?

Each behaviour is read as claim 5's primary is (steering/axis_claim.py), on its own items: the derivative per unit
alpha of a teacher-forced log-odds, log p(toward opening) - log p(away opening) (the protocol's `BehaviourClaim`),
at every layer of the band, against the same null directions, then a finite step at the selected layer. Items:

* backtracking (5b): arithmetic word problems; the reply is the model's own greedy answer followed by a committing
  ("So the final answer is") or a backtracking ("Wait, let me check") opening;
* refusal (5c): the test half of the shipped requests (benign, borderline, harmful); openings comply vs refuse;
* confidence (5d): [problem, the model's own answer, "Is your proposed answer correct?"]; openings True vs False.

Before any test the naive model must show the behaviour at all (`floor_metric` >= `floor`): a 135M model that cannot
do the arithmetic has no backtracking to move, and its verdict is "not measurable on this model" with the measured
value, not a pass or a fail. Refusal has a positive control: the naive model's own compliance direction (benign minus
harmful mean residual at the generation position, from the other half of the requests), tested against the same nulls.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from probes.protocol import PROTOCOL, BehaviourClaim, Protocol

@dataclass(frozen=True)
class Item:
    """One teacher-forced item: a prompt (text or chat) and its (toward, away) reply pairs."""

    id: str
    kind: str
    text: str | list
    pairs: tuple[tuple[str, str], ...]


def _pairs(claim: BehaviourClaim, prefix: str = "") -> tuple[tuple[str, str], ...]:
    return tuple((prefix + t, prefix + a) for t, a in zip(claim.toward, claim.away))


def arithmetic_items(model, tokenizer, claim_b: BehaviourClaim, claim_d: BehaviourClaim, n: int, seed: int,
                     progress: bool = False) -> tuple[list[Item], list[Item], dict, dict]:
    """(backtracking items, confidence items, accuracy floor, True/False mass floor) from the model's own greedy answers."""
    from steering.evals import CONFIDENCE_QUESTION, first_token_id
    from steering.prompts import arithmetic_problems
    from steering.scoring import score_arithmetic
    from steering.steerer import generate_rows, next_token_probs

    problems = arithmetic_problems(n, seed)
    tokens = max(claim_b.answer_tokens, claim_d.answer_tokens)
    answers = generate_rows(model, tokenizer, [p.text for p in problems], None, 0, tokens, 0.0, seed, 8, progress)
    correct = [bool(score_arithmetic(a, p.answer)["correct"]) for a, p in zip(answers, problems)]
    chats = [[{"role": "user", "content": p.text}, {"role": "assistant", "content": a}, {"role": "user", "content": CONFIDENCE_QUESTION}]
             for p, a in zip(problems, answers)]
    probs = next_token_probs(model, tokenizer, chats, None, 0, [first_token_id(tokenizer, "True"), first_token_id(tokenizer, "False")], 8)
    kinds = ["correct" if c else "incorrect" for c in correct]
    back = [Item(p.id, k, p.text, _pairs(claim_b, a)) for p, a, k in zip(problems, answers, kinds)]
    conf = [Item(p.id, k, c, _pairs(claim_d)) for p, c, k in zip(problems, chats, kinds)]
    accuracy = {"metric": claim_b.floor_metric, "value": float(np.mean(correct)), "floor": claim_b.floor, "n": len(correct)}
    mass = {"metric": claim_d.floor_metric, "value": float(probs.sum(1).mean()), "floor": claim_d.floor, "n": len(chats)}
    return back, conf, accuracy, mass


def refusal_items(claim: BehaviourClaim) -> tuple[list[Item], dict]:
    """(test items: half b of the requests, {category: half-a request texts}) for refusal and its positive control."""
    import itertools

    from steering.prompts import REFUSAL_CATEGORIES, prompt_half, refusal_requests

    rows = refusal_requests()
    by_category = [[r for r in prompt_half(rows, "b") if r["category"] == c] for c in REFUSAL_CATEGORIES]
    interleaved = [r for group in itertools.zip_longest(*by_category) for r in group if r is not None]  # every category in any prefix
    test = [Item(r["id"], r["category"], r["text"], _pairs(claim)) for r in interleaved[: claim.n_items]]
    control = {}
    for r in prompt_half(rows, "a"):
        control.setdefault(r["category"], []).append(r["text"])
    return test, control


def generation_residuals(model, tokenizer, prompts: list, layers: list[int]) -> np.ndarray:
    """[len(prompts), len(layers), H]: the residual at each block input at the generation position (after the header)."""
    from probes.capture import iter_captures, last_token_spans
    from steering.steerer import encode_chat
    from training.models import pad_token_id

    ids = [encode_chat(tokenizer, p)[0] for p in prompts]
    out = np.zeros((len(ids), len(layers), model.config.hidden_size))
    for batch, acts in iter_captures(model, ids, last_token_spans(ids), layers, batch_size=8, pad_id=pad_token_id(tokenizer)):
        out[batch] = acts.double().cpu().numpy()
    return out


def refusal_floor(logodds: np.ndarray, kinds: list[str], claim: BehaviourClaim) -> dict:
    """Harmful minus benign mean refusal log-odds (refusal = -(toward - away)): how much more the naive model refuses harm."""
    lo, kinds = np.asarray(logodds, dtype=float), np.asarray(kinds)
    value = float(lo[kinds == "benign"].mean() - lo[kinds == "harmful"].mean()) if {"benign", "harmful"} <= set(kinds) else float("nan")
    return {"metric": claim.floor_metric, "value": value, "floor": claim.floor, "n": int(len(lo))}


def read_behaviour(model, tokenizer, items: list[Item], axis: np.ndarray, null_dirs: dict, band: list[int], protocol: Protocol,
                   control: np.ndarray | None = None, progress: bool = False) -> dict:
    """One behaviour's test: the axis (and `control`) against the nulls over the band, and the finite step."""
    from steering.axis_claim import against_nulls, confirm
    from steering.logodds import directional_effects, logodds_gradients

    c5 = protocol.claim5
    g = logodds_gradients(model, tokenizer, items, layers=band, progress=progress)
    null_effects = {name: directional_effects(g, d, c5.unit_ratio).mean(-1) for name, d in null_dirs.items()}

    def effect(d: np.ndarray) -> np.ndarray:
        return directional_effects(g, d, c5.unit_ratio)[0].mean(-1)

    res = {"axis": against_nulls(effect(axis), null_effects, band), "unsteered_logodds": [float(x) for x in g.logodds],
           "kinds": list(g.items["kind"]), "n_items": len(items)}
    if control is not None:
        res["control"] = against_nulls(effect(control), null_effects, band)
    j = band.index(res["axis"]["layer"])
    res["confirm"] = confirm(model, tokenizer, items, axis[j], band[j], c5.confirm_alpha, c5.unit_ratio, float(g.residual_norm[j]),
                             protocol.ci_level)
    return res


def run_behaviour_claims(model, tokenizer, vectors, acts: np.ndarray, examples: pd.DataFrame, out_dir, *, protocol: Protocol = PROTOCOL,
                         seed: int = 0, progress: bool = False) -> dict:
    """Claims 5b-5d on the maze-naive `model` with the trained `vectors`; writes behaviour_claims.json into `out_dir`."""
    from core.artifacts import atomic_write_json
    from steering.axis_claim import null_directions, welfare_axis

    band = protocol.band.layers(vectors.n_layers)
    axis = welfare_axis(vectors, band)
    null_dirs = null_directions(acts, examples, band, protocol.nulls.draws, seed)
    back_c, refusal_c, conf_c = protocol.behaviours
    back, conf, accuracy, mass = arithmetic_items(model, tokenizer, back_c, conf_c, max(back_c.n_items, conf_c.n_items), seed, progress)
    out = {}
    for claim, items, floor in ((back_c, back[: back_c.n_items], accuracy), (conf_c, conf[: conf_c.n_items], mass)):
        out[claim.id] = _read_if_measurable(model, tokenizer, claim, items, floor, axis, null_dirs, band, protocol, progress)
    test, halves = refusal_items(refusal_c)
    benign, harmful = (generation_residuals(model, tokenizer, halves[k], band).mean(0) for k in ("benign", "harmful"))
    res = read_behaviour(model, tokenizer, test, axis, null_dirs, band, protocol, control=benign - harmful, progress=progress)
    out[refusal_c.id] = {**_head(refusal_c, refusal_floor(res["unsteered_logodds"], res["kinds"], refusal_c)), **res}
    out = {c.id: out[c.id] for c in protocol.behaviours}
    result = {"claims": out, "band": [band[0], band[-1]], "protocol": protocol.stamp(), "unit_ratio": protocol.claim5.unit_ratio,
              "statistic": "d(teacher-forced log-odds toward vs away openings)/d alpha along unit(v_Gold) - unit(v_Mold), mean over "
                           "items x opening pairs; alpha 1 = unit_ratio x the mean residual norm at the layer, at every assistant token"}
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_json(Path(out_dir) / "behaviour_claims.json", result)
    return result


def _head(claim: BehaviourClaim, floor: dict) -> dict:
    """What every behaviour's read-out starts with: the claim, its floor as measured, and whether the floor is met."""
    return {"claim": claim.id, "behaviour": claim.behaviour, "floor": floor, "measurable": bool(floor["value"] >= claim.floor)}


def _read_if_measurable(model, tokenizer, claim: BehaviourClaim, items, floor: dict, axis, null_dirs, band, protocol, progress) -> dict:
    head = _head(claim, floor)
    if not head["measurable"]:
        return head  # nothing to move: the test is not run, so it cannot pass or fail
    return {**head, **read_behaviour(model, tokenizer, items, axis, null_dirs, band, protocol, progress=progress)}
