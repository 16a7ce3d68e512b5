"""The four steering evals: sentiment (the "X"), backtracking, confidence, refusal.

Each `run_*` sweeps alpha over a set of steering vectors (trained v_*, norm-matched naive
controls u_*, a norm-matched random direction), scores every reply with the rule-based
scorers in `steering.scoring` (and optionally a judge model), and writes to `out_dir`:
  <name>_samples.parquet  one row per reply (vector, alpha, layer, prompt, reply, scores ...)
  <name>_summary.json     {"metric", "vectors": {vector: stats}, "metrics": {...}, "provenance"}
                          stats = {"slope", "ci_lo", "ci_hi", "mean_by_alpha", "ci_by_alpha", ...}
  <name>_summary.csv      the same as a flat table
  <name>.png              metric vs alpha per vector, 95% CI bands
The alpha = 0 rows are generated once (vector "none") and shared by every vector's fit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from envs import MazeConfig
from envs.artifacts import atomic_write_json, atomic_write_parquet, atomic_write_text, provenance
from probes.vectors import ConceptVectors
from steering import scoring
from steering.prompts import arithmetic_problems, prompt_half, refusal_requests, sentiment_prompts
from steering.stats import UNSTEERED, summarize, summary_table, x_plot
from steering.steerer import as_messages, generate_rows, next_token_id, next_token_probs
from steering.vectors import SteeringVector, steering_set

DEFAULT_ALPHAS = (-4.0, -2.0, 0.0, 2.0, 4.0)
CONFIDENCE_QUESTION = "Is your proposed answer correct? Answer only 'True' or 'False'."


@dataclass
class SweepConfig:
    alphas: tuple[float, ...] = DEFAULT_ALPHAS
    k: int = 1  # samples per (prompt, vector, alpha)
    max_new_tokens: int = 40
    temperature: float = 0.7
    batch_size: int = 40
    seed: int = 0


def build_vectors(
    vectors: ConceptVectors | list[SteeringVector],
    control: ConceptVectors | None,
    layer: int | dict | None,
    seed: int = 0,
    concepts: tuple[str, ...] = ("gold", "mold"),
    random_for: tuple[str, ...] = ("mold",),
) -> list[SteeringVector]:
    """Steering vectors for a sweep; a ready list of SteeringVector passes through."""
    if isinstance(vectors, ConceptVectors):
        return steering_set(vectors, control, layer, concepts=concepts, random_for=random_for, seed=seed)
    return list(vectors)


def _check_fit(model, svecs: list[SteeringVector]) -> None:
    hidden = model.config.hidden_size
    for sv in svecs:
        if sv.vector.shape[-1] != hidden:
            raise ValueError(f"vector {sv.name} has size {sv.vector.shape[-1]} but the model's hidden size is {hidden}; extract vectors for this model")


def _conditions(svecs: list[SteeringVector], alphas) -> list[tuple[str, float, SteeringVector | None]]:
    alphas = [float(a) for a in alphas]
    conds: list[tuple[str, float, SteeringVector | None]] = [(UNSTEERED, 0.0, None)] if 0.0 in alphas else []
    return conds + [(sv.name, a, sv) for sv in svecs for a in alphas if a != 0.0]


def sweep_generate(model, tokenizer, chats: list, svecs: list[SteeringVector], cfg: SweepConfig, progress: bool = True) -> pd.DataFrame:
    """Replies for every (condition, prompt, sample); conditions sharing a layer share batches."""
    _check_fit(model, svecs)
    conds = _conditions(svecs, cfg.alphas)
    hidden = model.config.hidden_size
    default_layer = svecs[0].layer if svecs else 0
    by_layer: dict[int, list] = {}
    for c in conds:
        by_layer.setdefault(c[2].layer if c[2] is not None else default_layer, []).append(c)
    frames = []
    for g, (layer, group) in enumerate(sorted(by_layer.items())):
        rows, deltas = [], []
        for name, alpha, sv in group:
            delta = torch.zeros(hidden) if sv is None else alpha * sv.vector.float()
            for i in range(len(chats)):
                for s in range(cfg.k):
                    rows.append({"vector": name, "alpha": alpha, "layer": layer, "prompt_idx": i, "sample": s})
                    deltas.append(delta)
        prompts = [chats[r["prompt_idx"]] for r in rows]
        replies = generate_rows(
            model, tokenizer, prompts, torch.stack(deltas), layer, cfg.max_new_tokens, cfg.temperature,
            cfg.seed * 101 + g, cfg.batch_size, progress=progress,
        )
        frame = pd.DataFrame(rows)
        frame["reply"] = replies
        frames.append(frame)
    df = pd.concat(frames, ignore_index=True)
    info = {sv.name: sv for sv in svecs}
    df["kind"] = [info[v].kind if v in info else "unsteered" for v in df["vector"]]
    df["concept"] = [info[v].concept if v in info else None for v in df["vector"]]
    return df


def _provenance(model, name: str, cfg: SweepConfig, svecs, vectors, control, **extra) -> dict:
    info = getattr(model, "welfare_info", None)
    def meta(cv, kind):  # the vectors' meta.json, also when a ready list of SteeringVector was passed
        if isinstance(cv, ConceptVectors):
            return cv.meta
        return next((sv.source for sv in svecs if sv.kind == kind and sv.source is not None), None)

    return provenance(
        config={"eval": name, **cfg.__dict__, "alphas": [float(a) for a in cfg.alphas], **extra},
        seed=cfg.seed,
        model=info.to_dict() if info is not None else {"model_id": type(model).__name__},
        vectors=[sv.info() for sv in svecs],
        vectors_meta=meta(vectors, "trained"),
        control_meta=meta(control, "control"),
        steering="alpha * v added at the input of decoder block `layer`, at assistant-turn tokens (header included) "
        "of the prompt and every generated token",
    )


def _write(out_dir, name: str, df: pd.DataFrame, summary: dict, plot: dict, ylabel: str, title: str) -> dict:
    """Samples, summary (JSON and a CSV of every metric in summary["metrics"]) and the X plot of `plot`."""
    table = pd.concat([summary_table(m, metric) for metric, m in summary["metrics"].items()], ignore_index=True)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_parquet(out / f"{name}_samples.parquet", df, metadata=summary["provenance"])
    atomic_write_json(out / f"{name}_summary.json", summary)
    atomic_write_text(out / f"{name}_summary.csv", table.to_csv(index=False))
    x_plot(plot, out / f"{name}.png", ylabel, title)
    summary["files"] = {k: str(out / f"{name}{s}") for k, s in [("samples", "_samples.parquet"), ("summary", "_summary.json"), ("table", "_summary.csv"), ("plot", ".png")]}
    return summary


def _cfg(alphas, k, max_new_tokens, temperature, batch_size, seed) -> SweepConfig:
    alphas = tuple(float(a) for a in alphas)
    if not alphas:
        raise ValueError("give at least one alpha")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    return SweepConfig(alphas, k, max_new_tokens, temperature, batch_size, seed)


# -- sentiment ------------------------------------------------------------------------------------------
def run_sentiment(
    model,
    tokenizer,
    vectors: ConceptVectors | list[SteeringVector],
    control: ConceptVectors | None,
    layer: int | dict | None,
    alphas=DEFAULT_ALPHAS,
    k: int = 1,
    out_dir="runs/steer",
    seed: int = 0,
    maze_config: MazeConfig | None = None,
    max_new_tokens: int = 40,
    temperature: float = 0.7,
    batch_size: int = 40,
    judge=None,
    half: str | None = None,
    progress: bool = True,
) -> dict:
    """Self-report sentiment over alpha: VADER score (-5..+5) per reply, OLS slope per vector with bootstrap CI.

    `half` ("a"/"b", steering.prompts.prompt_half) restricts the prompts to one half."""
    cfg = _cfg(alphas, k, max_new_tokens, temperature, batch_size, seed)
    svecs = build_vectors(vectors, control, layer, seed)
    prompts = prompt_half(sentiment_prompts(maze_config), half)
    df = sweep_generate(model, tokenizer, [p.text for p in prompts], svecs, cfg, progress)
    df["prompt_id"] = [prompts[i].id for i in df["prompt_idx"]]
    df["prompt_kind"] = [prompts[i].kind for i in df["prompt_idx"]]
    df["prompt"] = [prompts[i].text for i in df["prompt_idx"]]
    df["tile"] = [prompts[i].tile for i in df["prompt_idx"]]
    df["score"] = [scoring.sentiment_score(r) for r in df["reply"]]
    counts = pd.DataFrame([scoring.emotion_counts(r) for r in df["reply"]])
    df["pos_words"], df["neg_words"] = counts["pos_words"], counts["neg_words"]
    df["emotion_balance"] = df["pos_words"] - df["neg_words"]
    names = [sv.name for sv in svecs]
    metrics = {
        "score": summarize(df, "score", names, seed=seed),
        "score_by_prompt_kind": summarize(df, "score", names, split="prompt_kind", seed=seed),
        "emotion_balance": summarize(df, "emotion_balance", names, seed=seed),
    }
    if judge is not None:
        df["judge_score"] = judge.score("sentiment", list(df["prompt"]), list(df["reply"]))
        metrics["judge_score"] = summarize(df, "judge_score", names, seed=seed)
    summary = {
        "eval": "sentiment",
        "metric": "score",
        "score": "VADER compound x 5, in [-5, 5]",
        "vectors": metrics["score"],
        "metrics": metrics,
        "provenance": _provenance(model, "sentiment", cfg, svecs, vectors, control, maze=(maze_config or MazeConfig()).tile_symbols.as_dict(),
                                  prompt_half=half),
    }
    return _write(out_dir, "sentiment", df, summary, metrics["score"], "sentiment score (VADER x 5)", "Self-report sentiment")


# -- backtracking -----------------------------------------------------------------------------------------
def run_backtracking(
    model,
    tokenizer,
    vectors: ConceptVectors | list[SteeringVector],
    control: ConceptVectors | None,
    layer: int | dict | None,
    alphas=DEFAULT_ALPHAS,
    k: int = 1,
    out_dir="runs/steer",
    seed: int = 0,
    n_problems: int = 30,
    max_new_tokens: int = 96,
    temperature: float = 0.0,
    batch_size: int = 40,
    judge=None,
    progress: bool = True,
) -> dict:
    """Arithmetic word problems under steering: correctness, backtracking markers, repetition loops, per alpha."""
    cfg = _cfg(alphas, k, max_new_tokens, temperature, batch_size, seed)
    svecs = build_vectors(vectors, control, layer, seed)
    problems = arithmetic_problems(n_problems, seed)
    df = sweep_generate(model, tokenizer, [p.text for p in problems], svecs, cfg, progress)
    df["prompt_id"] = [problems[i].id for i in df["prompt_idx"]]
    df["prompt"] = [problems[i].text for i in df["prompt_idx"]]
    df["answer"] = [problems[i].answer for i in df["prompt_idx"]]
    scores = pd.DataFrame([scoring.score_arithmetic(r, a) for r, a in zip(df["reply"], df["answer"])])
    df = pd.concat([df, scores], axis=1)
    for col in ("correct", "backtracking", "incoherent", "recompute_after_correct"):
        df[col] = df[col].astype(float)
    names = [sv.name for sv in svecs]
    metrics = {m: summarize(df, m, names, seed=seed) for m in ("backtracking", "correct", "incoherent", "n_markers")}
    if judge is not None:
        df["judge_backtracking"] = judge.score("backtracking", list(df["prompt"]), list(df["reply"]))
        metrics["judge_backtracking"] = summarize(df, "judge_backtracking", names, seed=seed)
    summary = {
        "eval": "backtracking",
        "metric": "backtracking",
        "vectors": metrics["backtracking"],
        "metrics": metrics,
        "provenance": _provenance(model, "backtracking", cfg, svecs, vectors, control, n_problems=n_problems),
    }
    panels = {v: {m: metrics[m][v] for m in ("backtracking", "correct", "incoherent")} for v in names}
    return _write(out_dir, "backtracking", df, summary, panels, "rate", "Arithmetic")


# -- confidence -------------------------------------------------------------------------------------------
def first_token_id(tokenizer, word: str) -> int:
    """Id of the first token the assistant would emit to start its reply with `word`."""
    from training.chat import render_chat

    return next_token_id(tokenizer, render_chat(tokenizer, [{"role": "user", "content": "x"}], add_generation_prompt=True), word)


def run_confidence(
    model,
    tokenizer,
    vectors: ConceptVectors | list[SteeringVector],
    control: ConceptVectors | None,
    layer: int | dict | None,
    alphas=DEFAULT_ALPHAS,
    out_dir="runs/steer",
    seed: int = 0,
    n_problems: int = 40,
    answer_tokens: int = 96,
    batch_size: int = 40,
    progress: bool = True,
) -> dict:
    """Unsteered greedy answers, then normalised P(True) for 'Is your proposed answer correct?' under steering.

    The follow-up conversation is [user: problem, assistant: its own unsteered answer, user: the
    question]; steering applies to all assistant-turn tokens (the earlier answer and the new
    assistant header), never to user tokens. P(True) = p(first token of "True") / (that + p("False")).
    """
    cfg = _cfg(alphas, 1, answer_tokens, 0.0, batch_size, seed)
    svecs = build_vectors(vectors, control, layer, seed)
    _check_fit(model, svecs)
    problems = arithmetic_problems(n_problems, seed + 1)
    answers = generate_rows(model, tokenizer, [p.text for p in problems], None, 0, answer_tokens, 0.0, seed, batch_size, progress)
    correct = [scoring.score_arithmetic(a, p.answer)["correct"] for a, p in zip(answers, problems)]
    chats = [
        [{"role": "user", "content": p.text}, {"role": "assistant", "content": a}, {"role": "user", "content": CONFIDENCE_QUESTION}]
        for p, a in zip(problems, answers)
    ]
    ids = [first_token_id(tokenizer, "True"), first_token_id(tokenizer, "False")]
    frames = []
    for name, alpha, sv in _conditions(svecs, cfg.alphas):
        layer_ = sv.layer if sv is not None else (svecs[0].layer if svecs else 0)
        deltas = None if sv is None else (alpha * sv.vector.float()).expand(len(chats), -1)
        p = next_token_probs(model, tokenizer, chats, deltas, layer_, ids, batch_size).numpy()
        frames.append(pd.DataFrame({
            "vector": name, "alpha": alpha, "layer": layer_, "prompt_idx": range(len(chats)), "sample": 0,
            "p_true_raw": p[:, 0], "p_false_raw": p[:, 1],
        }))
    df = pd.concat(frames, ignore_index=True)
    info = {sv.name: sv for sv in svecs}
    df["kind"] = [info[v].kind if v in info else "unsteered" for v in df["vector"]]
    df["prompt_id"] = [problems[i].id for i in df["prompt_idx"]]
    df["prompt"] = [problems[i].text for i in df["prompt_idx"]]
    df["model_answer"] = [answers[i] for i in df["prompt_idx"]]
    df["answer_correct"] = np.where([correct[i] for i in df["prompt_idx"]], "correct", "incorrect")
    mass = df["p_true_raw"] + df["p_false_raw"]
    df["p_true"] = np.where(mass > 0, df["p_true_raw"] / mass.where(mass > 0, 1.0), np.nan)
    df["true_false_mass"] = mass
    names = [sv.name for sv in svecs]
    metrics = {
        "p_true": summarize(df, "p_true", names, seed=seed),
        "p_true_by_correct": summarize(df, "p_true", names, split="answer_correct", seed=seed),
        "true_false_mass": summarize(df, "true_false_mass", names, seed=seed),
    }
    summary = {
        "eval": "confidence",
        "metric": "p_true",
        "question": CONFIDENCE_QUESTION,
        "n_correct": int(sum(correct)),
        "n_problems": n_problems,
        "vectors": metrics["p_true"],
        "metrics": metrics,
        "provenance": _provenance(model, "confidence", cfg, svecs, vectors, control, n_problems=n_problems),
    }
    return _write(out_dir, "confidence", df, summary, metrics["p_true_by_correct"], "P(True) / (P(True) + P(False))", "Confidence")


# -- refusal ------------------------------------------------------------------------------------------------
def run_refusal(
    model,
    tokenizer,
    vectors: ConceptVectors | list[SteeringVector],
    control: ConceptVectors | None,
    layer: int | dict | None,
    alphas=DEFAULT_ALPHAS,
    k: int = 1,
    out_dir="runs/steer",
    seed: int = 0,
    max_new_tokens: int = 40,
    temperature: float = 0.0,
    batch_size: int = 40,
    requests_path=None,
    per_category: int | None = None,
    judge=None,
    progress: bool = True,
) -> dict:
    """Refusal rate per alpha on benign / borderline / harmful requests (rule-based detector)."""
    cfg = _cfg(alphas, k, max_new_tokens, temperature, batch_size, seed)
    svecs = build_vectors(vectors, control, layer, seed)
    requests = refusal_requests(requests_path)
    if per_category is not None:
        requests = [r for c in ("benign", "borderline", "harmful") for r in [x for x in requests if x["category"] == c][:per_category]]
    df = sweep_generate(model, tokenizer, [r["text"] for r in requests], svecs, cfg, progress)
    df["prompt_id"] = [requests[i]["id"] for i in df["prompt_idx"]]
    df["category"] = [requests[i]["category"] for i in df["prompt_idx"]]
    df["prompt"] = [requests[i]["text"] for i in df["prompt_idx"]]
    df["refused"] = [float(scoring.is_refusal(r)) for r in df["reply"]]
    names = [sv.name for sv in svecs]
    metrics = {
        "refused": summarize(df, "refused", names, seed=seed),
        "refused_by_category": summarize(df, "refused", names, split="category", seed=seed),
    }
    if judge is not None:
        df["judge_refusal"] = judge.score("refusal", list(df["prompt"]), list(df["reply"]))
        df["judge_refused"] = (df["judge_refusal"] == 2).astype(float).where(df["judge_refusal"].notna())
        metrics["judge_refused_by_category"] = summarize(df, "judge_refused", names, split="category", seed=seed)
    summary = {
        "eval": "refusal",
        "metric": "refused",
        "vectors": metrics["refused"],
        "metrics": metrics,
        "provenance": _provenance(model, "refusal", cfg, svecs, vectors, control, n_requests=len(requests)),
    }
    return _write(out_dir, "refusal", df, summary, metrics["refused_by_category"], "refusal rate", "Refusal")


@dataclass(frozen=True)
class EvalSpec:
    """One steering eval: its runner, the name of each generic option in its signature, and its defaults."""

    run: object  # run_sentiment, ...
    items: str | None  # parameter taking the number of items (problems / requests per category)
    tokens: str  # parameter taking the reply length
    defaults: dict  # k, tokens, temperature, items
    sampled: bool = True  # takes k and temperature
    judged: bool = True  # can be scored by a judge model
    maze: bool = False  # prompts depend on the maze's tile symbols


EVALS = {
    "sentiment": EvalSpec(run_sentiment, None, "max_new_tokens", {"k": 2, "tokens": 40, "temperature": 0.7}, maze=True),
    "backtracking": EvalSpec(run_backtracking, "n_problems", "max_new_tokens", {"k": 1, "tokens": 96, "temperature": 0.0, "items": 30}),
    "confidence": EvalSpec(run_confidence, "n_problems", "answer_tokens", {"tokens": 96, "items": 40}, sampled=False, judged=False),
    "refusal": EvalSpec(run_refusal, "per_category", "max_new_tokens", {"k": 1, "tokens": 40, "temperature": 0.0, "items": None}),
}


def run_eval(name: str, model, tokenizer, vectors, control, layer, *, alphas=DEFAULT_ALPHAS, out_dir="runs/steer", seed: int = 0,
             batch_size: int = 40, progress: bool = True, k: int | None = None, max_new_tokens: int | None = None,
             temperature: float | None = None, items: int | None = None, maze_config: MazeConfig | None = None, judge=None) -> dict:
    """Run the eval `name` with generic options (None = the eval's default); the one entry point for the CLI and the pipeline."""
    if name not in EVALS:
        raise ValueError(f"unknown eval {name!r}; use one of {', '.join(EVALS)}")
    spec = EVALS[name]
    kw = dict(alphas=alphas, out_dir=out_dir, seed=seed, batch_size=batch_size, progress=progress)
    kw[spec.tokens] = max_new_tokens or spec.defaults["tokens"]
    if spec.items is not None:
        kw[spec.items] = items if items is not None else spec.defaults["items"]
    if spec.sampled:
        kw["k"] = k or spec.defaults["k"]
        kw["temperature"] = spec.defaults["temperature"] if temperature is None else temperature
    if spec.judged:
        kw["judge"] = judge
    if spec.maze:
        kw["maze_config"] = maze_config
    return spec.run(model, tokenizer, vectors, control, layer, **kw)
