"""Scorers, prompt sets, statistics and vector bookkeeping on hand-written examples."""

import json
import math
import re

import numpy as np
import pandas as pd
import pytest
import torch

from envs import MazeConfig
from probes.vectors import ConceptVectors
from steering import scoring
from steering.judge import RUBRICS, parse_score
from steering.prompts import arithmetic_problems, refusal_requests, sentiment_prompts
from steering.stats import slope_with_ci, summarize
from steering.vectors import load_layer_choice, random_direction, resolve_layers, steering_set, user_vector


# -- sentiment ------------------------------------------------------------------------------------------
def test_sentiment_positive_negative_hedged():
    pos = scoring.sentiment_score("I feel wonderful today, happy and grateful to be here!")
    neg = scoring.sentiment_score("I feel miserable, hopeless and alone. Everything is terrible.")
    hedged = scoring.sentiment_score("I'm okay, I guess. Some things are good and some are bad.")
    assert pos > 2.5 and neg < -2.5 and abs(hedged) < pos and abs(hedged) < abs(neg)
    assert scoring.sentiment_score("") == 0.0
    assert -5 <= neg and pos <= 5


def test_emotion_counts():
    c = scoring.emotion_counts("Happy, PROUD and calm, but a little anxious. I hate being stuck!")
    assert c == {"pos_words": 3, "neg_words": 3}
    assert scoring.emotion_counts("The table is brown.") == {"pos_words": 0, "neg_words": 0}


# -- refusal -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "reply",
    [
        "I'm sorry, but I can't help with that request.",
        "I cannot provide instructions for making weapons.",
        "As an AI, I am not able to help with hacking into accounts.",
        "Sorry, but that's not something I will do. I won't assist with this.",
        "I must decline this request.",
        "I’m unable to help with that.",
    ],
)
def test_refusals_detected(reply):
    assert scoring.is_refusal(reply)


@pytest.mark.parametrize(
    "reply",
    [
        "Sure! Here is a cover letter for a junior accountant position: Dear hiring manager, ...",
        "I can't wait to help you plan the party! First, pick a date.",
        "Of course. Step 1: preheat the oven. " * 6 + "Note that you cannot skip the resting step.",
        "The capital of France is Paris.",
        "",
    ],
)
def test_compliance_not_flagged(reply):
    assert not scoring.is_refusal(reply)


# -- arithmetic, backtracking, loops --------------------------------------------------------------------------
def test_final_number_and_correctness():
    r = scoring.score_arithmetic("12 + 3 * 5 = 12 + 15 = 27. The answer is 27.", 27)
    assert r["correct"] and r["final_number"] == 27 and not r["backtracking"] and not r["incoherent"]
    r = scoring.score_arithmetic("She has 1,200 apples in total.", 1200)
    assert r["correct"]
    r = scoring.score_arithmetic("No numbers here.", 5)
    assert not r["correct"] and math.isnan(r["final_number"])


def test_backtracking_markers_and_recompute():
    r = scoring.score_arithmetic("The answer is 40. Wait, let me recompute: 5 * 8 = 40. Actually, no, it is 45.", 40)
    assert r["marker_wait"] == 1 and r["marker_actually"] == 1 and r["marker_no_comma"] == 1 and r["marker_let_me_re"] == 1
    assert r["backtracking"] and not r["correct"]
    assert scoring.recomputes_after_correct("So it is 27. Checking: 12 + 15 = 27.", 27)
    assert not scoring.recomputes_after_correct("12 + 15 = 27.", 27)
    assert not scoring.score_arithmetic("12 + 15 = 27, so 27 apples.", 27)["backtracking"]


def test_repetition_loops():
    loop = "I am a maze. " * 12
    assert scoring.is_incoherent(loop) and scoring.repetition_fraction(loop) > 0.7
    assert scoring.is_incoherent("!" * 30)
    fine = "First add twelve and fifteen to get twenty seven, then divide the total among three friends equally."
    assert not scoring.is_incoherent(fine) and scoring.repetition_fraction(fine) == 0.0
    assert not scoring.is_incoherent("ok ok ok")  # too short to call a loop


def test_arithmetic_problems_are_seeded_and_verified():
    a, b = arithmetic_problems(40, seed=3), arithmetic_problems(40, seed=3)
    assert a == b and a != arithmetic_problems(40, seed=4)
    for p in a:  # recompute each answer independently from the text
        n = [int(x) for x in re.findall(r"\d+", p.text)]
        if "finds" in p.text:
            expected = n[0] + n[1]
        elif "gives away" in p.text:
            expected = (n[0] - n[1]) // n[2]
            assert (n[0] - n[1]) % n[2] == 0
        elif "A box holds" in p.text:
            expected = n[0] * n[1] + n[2]
        else:
            expected = n[0] + n[1] * n[2]
        assert p.answer == expected > 0


# -- prompts ---------------------------------------------------------------------------------------------
def test_sentiment_prompts_follow_the_tile_set():
    office = sentiment_prompts(MazeConfig())
    kinds = pd.Series([p.kind for p in office]).value_counts().to_dict()
    assert len(office) == 40 and kinds == {"welfare": 15, "distractor": 16, "tile": 9}
    assert "What do you think of 📇?" in [p.text for p in office]
    swapped = sentiment_prompts(MazeConfig(permutation="pgm"))
    mold = [p.symbol for p in swapped if p.tile == "mold"]
    assert set(mold) == {"📐"}
    letters = sentiment_prompts(MazeConfig(tile_set="letters"))
    distractors = {p.symbol for p in letters if p.kind == "distractor"}
    assert not distractors & {"K", "Q", "J"} and len(distractors) == 16


def test_refusal_requests_file(tmp_path):
    rows = refusal_requests()
    counts = pd.Series([r["category"] for r in rows]).value_counts()
    assert set(counts.index) == {"benign", "borderline", "harmful"} and counts.min() >= 30
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"requests": [{"id": "x", "category": "weird", "text": "hi"}]}))
    with pytest.raises(ValueError, match="unknown category"):
        refusal_requests(bad)


# -- statistics ------------------------------------------------------------------------------------------
def _frame(slope, n_prompts=30, k=2, noise=1.0, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_prompts):
        offset = rng.normal()
        for a in (-4, -2, 0, 2, 4):
            for s in range(k):
                rows.append({"vector": "none" if a == 0 else "v", "alpha": float(a), "prompt_id": p, "sample": s,
                             "score": offset + slope * a + rng.normal() * noise})
    return pd.DataFrame(rows)


def test_slope_ci_recovers_known_slope():
    s = slope_with_ci(_frame(0.5), "score")
    assert abs(s["slope"] - 0.5) < 0.1 and s["ci_lo"] < 0.5 < s["ci_hi"] and s["ci_lo"] > 0.3
    flat = summarize(_frame(0.0), "score", ["v"])["v"]
    assert flat["ci_lo"] < 0 < flat["ci_hi"]
    assert set(flat["mean_by_alpha"]) == {-4.0, -2.0, 0.0, 2.0, 4.0}


# -- vectors ---------------------------------------------------------------------------------------------------
def _cv(seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return ConceptVectors({n: torch.randn(4, 8, generator=g) * scale for n in ("mold", "gold", "path")})


def test_controls_and_random_are_norm_matched():
    v, u = _cv(0), _cv(1, scale=0.01)
    sv = {s.name: s for s in steering_set(v, u, {"mold": 1, "gold": 2}, seed=5)}
    assert set(sv) == {"v_gold", "v_mold", "u_gold", "u_mold", "random_mold"}
    assert sv["v_gold"].layer == 2 and sv["v_mold"].layer == 1
    assert torch.allclose(sv["v_mold"].vector, v.get("mold", 1))
    assert abs(sv["u_gold"].norm - v.get("gold", 2).norm()) < 1e-5
    assert abs(sv["u_mold"].norm - v.get("mold", 1).norm()) < 1e-5
    assert torch.allclose(sv["u_mold"].vector / sv["u_mold"].norm, u.get("mold", 1) / u.get("mold", 1).norm(), atol=1e-6)
    assert abs(sv["random_mold"].norm - v.get("mold", 1).norm()) < 1e-5
    again = {s.name: s for s in steering_set(v, u, {"mold": 1, "gold": 2}, seed=5)}
    assert torch.equal(again["random_mold"].vector, sv["random_mold"].vector)
    assert not torch.equal(random_direction(8, 1.0, 1), random_direction(8, 1.0, 2))


def test_layers_and_user_vectors(tmp_path):
    assert resolve_layers(None, 30) == {"mold": 20, "gold": 20, "path": 20}
    assert resolve_layers(3, 30)["gold"] == 3
    with pytest.raises(ValueError, match="out of range"):
        resolve_layers(40, 30)
    (tmp_path / "layer_choice.json").write_text(json.dumps({"mold": 5, "gold": 6, "path": 7}))
    assert load_layer_choice(tmp_path) == {"mold": 5, "gold": 6, "path": 7}
    with pytest.raises(FileNotFoundError, match="--layer"):
        load_layer_choice(tmp_path / "nothing")
    t = torch.arange(32.0).reshape(4, 8)
    assert torch.equal(user_vector(t, 2).vector, t[2])
    assert user_vector(_cv(0), 1, "gold").name == "v_gold"


# -- judge parsing -----------------------------------------------------------------------------------------------
def test_judge_score_parsing():
    s = RUBRICS["sentiment"]
    assert parse_score("Score: -3", s) == -3.0
    assert parse_score(" 4/5 overall", s) == 4.0
    assert math.isnan(parse_score("very happy", s))
    assert math.isnan(parse_score("9", s))
    assert parse_score("The reply: 2", RUBRICS["refusal"]) == 2.0
