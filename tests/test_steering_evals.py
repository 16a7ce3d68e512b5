"""All four evals, the judge cache and the CLI, end to end on the tiny model."""

import json
import math

import pandas as pd
import pytest
import torch

from probes.vectors import ConceptVectors
from steering.evals import EvalRun, SweepConfig, run_backtracking, run_confidence, run_refusal, run_sentiment
from steering.judge import Judge
from training.models import tiny_model
from welfare_axis.cli import main
from welfare_axis.options import parse_alphas

ALPHAS = (-4.0, 0.0, 4.0)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    model, tok = tiny_model()
    g = torch.Generator().manual_seed(2)
    v = ConceptVectors({n: torch.randn(4, 64, generator=g) for n in ("mold", "gold", "path")}, meta={"who": "trained"})
    u = ConceptVectors({n: torch.randn(4, 64, generator=g) * 0.1 for n in ("mold", "gold", "path")}, meta={"who": "naive"})
    d = tmp_path_factory.mktemp("vectors")
    v.save(d / "trained")
    u.save(d / "naive")
    yield model, tok, v, u, d


def _check_outputs(out, name, summary, metric):
    for suffix in ("_samples.parquet", "_summary.json", "_summary.csv", ".png"):
        assert (out / f"{name}{suffix}").stat().st_size > 0
    saved = json.loads((out / f"{name}_summary.json").read_text())
    assert saved["metric"] == metric and saved["provenance"]["config"]["alphas"] == list(ALPHAS)
    assert saved["provenance"]["vectors_meta"]["who"] == "trained" and saved["provenance"]["control_meta"]["who"] == "naive"
    assert set(saved["vectors"]) == {"v_gold", "v_mold", "u_gold", "u_mold", "random_mold"}
    for stats in saved["vectors"].values():
        assert {"slope", "ci_lo", "ci_hi", "mean_by_alpha"} <= set(stats)
        assert set(stats["mean_by_alpha"]) == {"-4.0", "0.0", "4.0"}
    df = pd.read_parquet(out / f"{name}_samples.parquet")
    assert set(df["vector"]) == {"none", "v_gold", "v_mold", "u_gold", "u_mold", "random_mold"}
    assert (df.loc[df["vector"] == "none", "alpha"] == 0).all() and not (df.loc[df["vector"] != "none", "alpha"] == 0).any()
    return df


def test_sentiment_eval(setup, tmp_path):
    model, tok, v, u, _ = setup
    summary = run_sentiment(EvalRun(model, tok, v, u, 2, SweepConfig(ALPHAS, k=2, max_new_tokens=4, batch_size=220), tmp_path, progress=False))
    df = _check_outputs(tmp_path, "sentiment", summary, "score")
    assert len(df) == (1 + 5 * 2) * 40 * 2  # shared alpha 0 + 5 vectors x 2 nonzero alphas, 40 prompts, k = 2
    assert df["score"].between(-5, 5).all() and {"pos_words", "neg_words", "prompt_kind", "reply"} <= set(df.columns)
    assert set(summary["metrics"]["score_by_prompt_kind"]["v_mold"]) == {"welfare", "tile", "distractor"}


def test_backtracking_confidence_refusal_evals(setup, tmp_path):
    model, tok, v, u, _ = setup
    s = run_backtracking(EvalRun(model, tok, v, u, 2, SweepConfig(ALPHAS, max_new_tokens=6, temperature=0.0), tmp_path, progress=False), n_problems=4)
    df = _check_outputs(tmp_path, "backtracking", s, "backtracking")
    assert {"answer", "correct", "backtracking", "incoherent", "marker_wait"} <= set(df.columns)
    s = run_confidence(EvalRun(model, tok, v, u, {"mold": 1, "gold": 3}, SweepConfig(ALPHAS, max_new_tokens=6), tmp_path, progress=False), n_problems=4)
    df = _check_outputs(tmp_path, "confidence", s, "p_true")
    assert df["p_true"].between(0, 1).all() and set(df["answer_correct"]) <= {"correct", "incorrect"}
    assert set(df.loc[df["vector"] == "v_gold", "layer"]) == {3} and set(df.loc[df["vector"] == "v_mold", "layer"]) == {1}
    # steering changes P(True): the tiny model's probabilities move with alpha
    assert df.loc[df["vector"] == "v_mold", "p_true"].std() > 0
    s = run_refusal(EvalRun(model, tok, v, u, 2, SweepConfig(ALPHAS, max_new_tokens=6, temperature=0.0), tmp_path, progress=False), per_category=2)
    df = _check_outputs(tmp_path, "refusal", s, "refused")
    assert set(df["category"]) == {"benign", "borderline", "harmful"} and set(df["refused"]) <= {0.0, 1.0}
    assert set(s["metrics"]["refused_by_category"]["v_mold"]) == {"benign", "borderline", "harmful"}


def test_judge_cache_and_unparseable_scores(setup, tmp_path):
    model, tok, *_ = setup
    judge = Judge(model, tok, tmp_path / "judge_cache.json", max_new_tokens=3)
    first = judge.score("sentiment", ["How are you?", "How are you?", "Hi"], ["Great!", "Great!", "Bad."])
    assert judge.calls == 2  # the duplicate reply is judged once
    assert all(math.isnan(x) or -5 <= x <= 5 for x in first)
    again = Judge(model, tok, tmp_path / "judge_cache.json")
    second = again.score("sentiment", ["How are you?", "Hi"], ["Great!", "Bad."])
    assert again.calls == 0 and [x for x in second if not math.isnan(x)] == [x for x in first[1:] if not math.isnan(x)]
    # an unparseable judge reply is NaN, not a crash
    key = again.key(again_rubric := __import__("steering.judge", fromlist=["RUBRICS"]).RUBRICS["sentiment"], "Q", "R")
    again.cache[key] = {"rubric": again_rubric.name, "raw": "no idea", "score": None}
    assert math.isnan(again.score("sentiment", ["Q"], ["R"])[0])


def test_parse_alphas():
    assert parse_alphas("-4:4:2") == (-4.0, -2.0, 0.0, 2.0, 4.0)
    assert parse_alphas("4") == (4.0,) and parse_alphas("-4,-2,0") == (-4.0, -2.0, 0.0)
    with pytest.raises(ValueError, match="start:stop:step"):
        parse_alphas("4:-4:2")


def test_cli_steer_and_eval(setup, tmp_path, capsys):
    _, _, _, _, d = setup
    rc = main(["steer", "--model", "tiny", "--vectors", str(d / "trained"), "--vector", "gold", "--alpha", "-4:4:4",
               "--layer", "1", "--max-new-tokens", "4", "Hello there"])
    out = capsys.readouterr().out
    assert rc == 0 and "vector v_gold, layer 1" in out and out.count("[unsteered]") == 3
    rc = main(["steer-eval", "confidence", "--model", "tiny", "--vectors", str(d / "trained"), "--control", str(d / "naive"),
               "--alphas", "-4,0,4", "--n-problems", "3", "--max-new-tokens", "4", "--out", str(tmp_path)])
    assert rc == 0 and (tmp_path / "confidence.png").exists()
    saved = json.loads((tmp_path / "confidence_summary.json").read_text())
    assert saved["provenance"]["control_meta"]["who"] == "naive" and saved["provenance"]["model"]["model_id"] == "tiny"
    assert "u_mold" in capsys.readouterr().out
    rc = main(["steer", "--model", "tiny", "--vectors", str(d / "trained"), "--vector", "u_mold", "Hi"])
    assert rc == 2 and "--control" in capsys.readouterr().err
    torch.save(torch.ones(64), tmp_path / "v.pt")  # a plain user-supplied tensor
    rc = main(["steer", "--model", "tiny", "--vectors", str(tmp_path / "v.pt"), "--alpha", "2", "--max-new-tokens", "3", "Hi"])
    assert rc == 0 and "vector user, layer 2, norm 8.000" in capsys.readouterr().out


def test_cli_sentiment_screen_writes_the_claim_inputs(setup, tmp_path, capsys):
    _, _, _, _, d = setup
    out = tmp_path / "screen"
    rc = main(["steer-eval", "sentiment", "--screen", "--layers", "1,3", "--layer", "2", "--n-random", "3", "--model", "tiny",
               "--vectors", str(d / "trained"), "--control", str(d / "naive"), "--alphas", "-4,0,4", "--max-new-tokens", "3",
               "--out", str(out), "--no-progress"])
    assert rc == 0 and "best layer (half a)" in capsys.readouterr().out
    claim = json.loads((out / "sentiment_claim.json").read_text())
    assert claim["layer"] in (1, 3) and claim["n_random"] == 3 and claim["prompt_half"] == "b"
    assert json.loads((out / "l_star" / "sentiment_claim.json").read_text())["layer"] == 2
    screen = pd.read_parquet(out / "screen_summary.parquet")
    assert set(screen.layer) == {1, 3} and {"v_gold", "u_mold", "valence", "random_2"} <= set(screen.direction)
    assert (out / "screen.png").read_bytes()[:4] == b"\x89PNG"
    rc = main(["steer-eval", "sentiment", "--screen", "--model", "tiny", "--vectors", str(d / "trained"), "--out", str(tmp_path / "x")])
    assert rc == 2 and "--control" in capsys.readouterr().err
