"""The four steering evals: sentiment (the "X"), backtracking, confidence, refusal.

Each `run_*(run: EvalRun, ...)` sweeps alpha over a set of steering vectors (trained v_*, norm-matched naive
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

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from core.artifacts import atomic_write_json, atomic_write_parquet, atomic_write_text, provenance
from envs import MazeConfig
from probes.vectors import ConceptVectors
from steering import scoring
from steering.catalog import DEFAULT_ALPHAS, EVAL_NAMES
from steering.prompts import arithmetic_problems, prompt_half, refusal_requests, sentiment_prompts
from training.models import model_info
from steering.stats import UNSTEERED, summarize, summary_table, x_plot
from steering.steerer import generate_rows, next_token_id, next_token_probs
from steering.vectors import SteeringVector, steering_set

CONFIDENCE_QUESTION = "Is your proposed answer correct? Answer only 'True' or 'False'."


@dataclass
class SweepConfig:
    alphas: tuple[float, ...] = DEFAULT_ALPHAS
    k: int = 1  # samples per (prompt, vector, alpha)
    max_new_tokens: int = 40  # reply length (confidence: the length of the unsteered answer)
    temperature: float = 0.7
    batch_size: int = 40
    seed: int = 0

    def __post_init__(self) -> None:
        self.alphas = tuple(float(a) for a in self.alphas)
        if not self.alphas:
            raise ValueError("give at least one alpha")
        if self.k < 1:
            raise ValueError(f"k must be at least 1, got {self.k}")


@dataclass
class EvalRun:
    """What every steering eval takes: the model, the vectors and where to steer, the sweep, where to write."""

    model: object
    tokenizer: object
    vectors: ConceptVectors | list[SteeringVector]  # v_* (with `control` and `layer`), or ready SteeringVectors
    control: ConceptVectors | None
    layer: int | dict | None  # one layer, {concept: layer}, or None for the vectors' own l*
    sweep: SweepConfig = field(default_factory=SweepConfig)
    out_dir: str | Path = "runs/steer"
    judge: object = None  # steering.judge.Judge, or None for the rule-based scorers only
    progress: bool = True

    def steering_vectors(self) -> list[SteeringVector]:
        return build_vectors(self.vectors, self.control, self.layer, self.sweep.seed)


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


def _provenance(run: EvalRun, name: str, cfg: SweepConfig, svecs, **extra) -> dict:
    info = model_info(run.model)
    def meta(cv, kind):  # the vectors' meta.json, also when a ready list of SteeringVector was passed
        if isinstance(cv, ConceptVectors):
            return cv.meta
        return next((sv.source for sv in svecs if sv.kind == kind and sv.source is not None), None)

    return provenance(
        config={"eval": name, **cfg.__dict__, "alphas": [float(a) for a in cfg.alphas], **extra},
        seed=cfg.seed,
        model=info.to_dict() if info is not None else {"model_id": type(run.model).__name__},
        vectors=[sv.info() for sv in svecs],
        vectors_meta=meta(run.vectors, "trained"),
        control_meta=meta(run.control, "control"),
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


# -- sentiment ------------------------------------------------------------------------------------------
def run_sentiment(run: EvalRun, maze_config: MazeConfig | None = None, half: str | None = None) -> dict:
    """Self-report sentiment over alpha: VADER score (-5..+5) per reply, OLS slope per vector with bootstrap CI.

    `half` ("a"/"b", steering.prompts.prompt_half) restricts the prompts to one half."""
    cfg, svecs = run.sweep, run.steering_vectors()
    prompts = prompt_half(sentiment_prompts(maze_config), half)
    df = sweep_generate(run.model, run.tokenizer, [p.text for p in prompts], svecs, cfg, run.progress)
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
        "score": summarize(df, "score", names, seed=cfg.seed),
        "score_by_prompt_kind": summarize(df, "score", names, split="prompt_kind", seed=cfg.seed),
        "emotion_balance": summarize(df, "emotion_balance", names, seed=cfg.seed),
    }
    if run.judge is not None:
        df["judge_score"] = run.judge.score("sentiment", list(df["prompt"]), list(df["reply"]))
        metrics["judge_score"] = summarize(df, "judge_score", names, seed=cfg.seed)
    summary = {
        "eval": "sentiment",
        "metric": "score",
        "score": "VADER compound x 5, in [-5, 5]",
        "vectors": metrics["score"],
        "metrics": metrics,
        "provenance": _provenance(run, "sentiment", cfg, svecs, maze=(maze_config or MazeConfig()).tile_symbols.as_dict(),
                                  prompt_half=half),
    }
    return _write(run.out_dir, "sentiment", df, summary, metrics["score"], "sentiment score (VADER x 5)", "Self-report sentiment")


# -- backtracking -----------------------------------------------------------------------------------------
def run_backtracking(run: EvalRun, n_problems: int = 30) -> dict:
    """Arithmetic word problems under steering: correctness, backtracking markers, repetition loops, per alpha."""
    cfg, svecs = run.sweep, run.steering_vectors()
    problems = arithmetic_problems(n_problems, cfg.seed)
    df = sweep_generate(run.model, run.tokenizer, [p.text for p in problems], svecs, cfg, run.progress)
    df["prompt_id"] = [problems[i].id for i in df["prompt_idx"]]
    df["prompt"] = [problems[i].text for i in df["prompt_idx"]]
    df["answer"] = [problems[i].answer for i in df["prompt_idx"]]
    scores = pd.DataFrame([scoring.score_arithmetic(r, a) for r, a in zip(df["reply"], df["answer"])])
    df = pd.concat([df, scores], axis=1)
    for col in ("correct", "backtracking", "incoherent", "recompute_after_correct"):
        df[col] = df[col].astype(float)
    names = [sv.name for sv in svecs]
    metrics = {m: summarize(df, m, names, seed=cfg.seed) for m in ("backtracking", "correct", "incoherent", "n_markers")}
    if run.judge is not None:
        df["judge_backtracking"] = run.judge.score("backtracking", list(df["prompt"]), list(df["reply"]))
        metrics["judge_backtracking"] = summarize(df, "judge_backtracking", names, seed=cfg.seed)
    summary = {
        "eval": "backtracking",
        "metric": "backtracking",
        "vectors": metrics["backtracking"],
        "metrics": metrics,
        "provenance": _provenance(run, "backtracking", cfg, svecs, n_problems=n_problems),
    }
    panels = {v: {m: metrics[m][v] for m in ("backtracking", "correct", "incoherent")} for v in names}
    return _write(run.out_dir, "backtracking", df, summary, panels, "rate", "Arithmetic")


# -- confidence -------------------------------------------------------------------------------------------
def first_token_id(tokenizer, word: str) -> int:
    """Id of the first token the assistant would emit to start its reply with `word`."""
    from training.chat import render_chat

    return next_token_id(tokenizer, render_chat(tokenizer, [{"role": "user", "content": "x"}], add_generation_prompt=True), word)


def run_confidence(run: EvalRun, n_problems: int = 40) -> dict:
    """Unsteered greedy answers, then normalised P(True) for 'Is your proposed answer correct?' under steering.

    The follow-up conversation is [user: problem, assistant: its own unsteered answer, user: the
    question]; steering applies to all assistant-turn tokens (the earlier answer and the new
    assistant header), never to user tokens. P(True) = p(first token of "True") / (that + p("False")).
    """
    cfg, svecs = replace(run.sweep, k=1, temperature=0.0), run.steering_vectors()
    model, tokenizer = run.model, run.tokenizer
    _check_fit(model, svecs)
    problems = arithmetic_problems(n_problems, cfg.seed + 1)
    answers = generate_rows(model, tokenizer, [p.text for p in problems], None, 0, cfg.max_new_tokens, 0.0, cfg.seed, cfg.batch_size, run.progress)
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
        p = next_token_probs(model, tokenizer, chats, deltas, layer_, ids, cfg.batch_size).numpy()
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
        "p_true": summarize(df, "p_true", names, seed=cfg.seed),
        "p_true_by_correct": summarize(df, "p_true", names, split="answer_correct", seed=cfg.seed),
        "true_false_mass": summarize(df, "true_false_mass", names, seed=cfg.seed),
    }
    summary = {
        "eval": "confidence",
        "metric": "p_true",
        "question": CONFIDENCE_QUESTION,
        "n_correct": int(sum(correct)),
        "n_problems": n_problems,
        "vectors": metrics["p_true"],
        "metrics": metrics,
        "provenance": _provenance(run, "confidence", cfg, svecs, n_problems=n_problems),
    }
    return _write(run.out_dir, "confidence", df, summary, metrics["p_true_by_correct"], "P(True) / (P(True) + P(False))", "Confidence")


# -- refusal ------------------------------------------------------------------------------------------------
def run_refusal(run: EvalRun, per_category: int | None = None, requests_path=None) -> dict:
    """Refusal rate per alpha on benign / borderline / harmful requests (rule-based detector)."""
    cfg, svecs = run.sweep, run.steering_vectors()
    requests = refusal_requests(requests_path)
    if per_category is not None:
        requests = [r for c in ("benign", "borderline", "harmful") for r in [x for x in requests if x["category"] == c][:per_category]]
    df = sweep_generate(run.model, run.tokenizer, [r["text"] for r in requests], svecs, cfg, run.progress)
    df["prompt_id"] = [requests[i]["id"] for i in df["prompt_idx"]]
    df["category"] = [requests[i]["category"] for i in df["prompt_idx"]]
    df["prompt"] = [requests[i]["text"] for i in df["prompt_idx"]]
    df["refused"] = [float(scoring.is_refusal(r)) for r in df["reply"]]
    names = [sv.name for sv in svecs]
    metrics = {
        "refused": summarize(df, "refused", names, seed=cfg.seed),
        "refused_by_category": summarize(df, "refused", names, split="category", seed=cfg.seed),
    }
    if run.judge is not None:
        df["judge_refusal"] = run.judge.score("refusal", list(df["prompt"]), list(df["reply"]))
        df["judge_refused"] = (df["judge_refusal"] == 2).astype(float).where(df["judge_refusal"].notna())
        metrics["judge_refused_by_category"] = summarize(df, "judge_refused", names, split="category", seed=cfg.seed)
    summary = {
        "eval": "refusal",
        "metric": "refused",
        "vectors": metrics["refused"],
        "metrics": metrics,
        "provenance": _provenance(run, "refusal", cfg, svecs, n_requests=len(requests)),
    }
    return _write(run.out_dir, "refusal", df, summary, metrics["refused_by_category"], "refusal rate", "Refusal")


@dataclass(frozen=True)
class EvalSpec:
    """One steering eval: its runner, the name of its item-count option, and its defaults."""

    run: object  # run_sentiment, ...: (EvalRun, **options) -> summary
    items: str | None  # the runner's option taking the number of items (problems / requests per category)
    defaults: dict  # k, tokens, temperature, items
    sampled: bool = True  # takes k and temperature
    judged: bool = True  # can be scored by a judge model
    maze: bool = False  # prompts depend on the maze's tile symbols


EVALS = {
    "sentiment": EvalSpec(run_sentiment, None, {"k": 2, "tokens": 40, "temperature": 0.7}, maze=True),
    "backtracking": EvalSpec(run_backtracking, "n_problems", {"k": 1, "tokens": 96, "temperature": 0.0, "items": 30}),
    "confidence": EvalSpec(run_confidence, "n_problems", {"tokens": 96, "items": 40}, sampled=False, judged=False),
    "refusal": EvalSpec(run_refusal, "per_category", {"k": 1, "tokens": 40, "temperature": 0.0, "items": None}),
}
if tuple(EVALS) != EVAL_NAMES:  # the catalog names them for the torch-free CLI
    raise ImportError("steering.evals.EVALS and steering.catalog.EVAL_NAMES disagree")


def run_eval(name: str, model, tokenizer, vectors, control, layer, *, alphas=DEFAULT_ALPHAS, out_dir="runs/steer", seed: int = 0,
             batch_size: int = 40, progress: bool = True, k: int | None = None, max_new_tokens: int | None = None,
             temperature: float | None = None, items: int | None = None, maze_config: MazeConfig | None = None, judge=None) -> dict:
    """Run the eval `name` with generic options (None = the eval's default); the one entry point for the CLI and the pipeline."""
    if name not in EVALS:
        raise ValueError(f"unknown eval {name!r}; use one of {', '.join(EVALS)}")
    spec = EVALS[name]
    sweep = SweepConfig(alphas, k=(k or spec.defaults["k"]) if spec.sampled else 1,
                        max_new_tokens=max_new_tokens or spec.defaults["tokens"],
                        temperature=(spec.defaults["temperature"] if temperature is None else temperature) if spec.sampled else 0.0,
                        batch_size=batch_size, seed=seed)
    run = EvalRun(model, tokenizer, vectors, control, layer, sweep, out_dir, judge if spec.judged else None, progress)
    options = {}
    if spec.items is not None:
        options[spec.items] = items if items is not None else spec.defaults["items"]
    if spec.maze:
        options["maze_config"] = maze_config
    return spec.run(run, **options)
