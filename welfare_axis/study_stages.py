"""The study as a table of stages: what each stage is keyed on, what it depends on, when it applies and what it runs.

`STUDY` lists them in `welfare_axis.stages.STAGES` order; `welfare_axis.pipeline` loops over it with a
`StageRunner` (cached, resumable). Each entry's `key` is everything its output depends on besides its
dependencies' keys (a change re-runs it and everything after it), `run(ctx, folder)` does the work and
returns the summary kept in stage.json, and `after(ctx)` reads what later stages need from its folder
(also when the stage was cached). Adding a stage: one entry here and its name in STAGES.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from core.artifacts import atomic_write_json, provenance
from probes.protocol import PROTOCOL

# The protocol's parts each read-out stage reads: its key holds their hash, so a rule change re-runs exactly these.
ANALYZE_RULES = ("nulls", "band", "fixed", "claim1", "claim2", "claim3", "claim4", "ci_level", "reliability_target")
STEER_RULES = ("nulls", "band", "claim5", "ci_level")
BEHAVIOUR_RULES = ("nulls", "band", "claim5", "behaviours", "ci_level")
SECONDARY = "secondary"  # --skip secondary: steer_naive runs claim 5's primary only (no generated self-reports or other evals)


@dataclass
class RunContext:
    """What the stages of one reproduce run share: its settings, the runner and the models it has loaded."""

    p: object  # the resolved welfare_axis.study_config.StudyConfig
    out: Path
    model_id: str
    training: str  # "rl", "sft" or "sft+rl"
    plant: str | None
    stories: str | None
    stories_key: str | None
    seed: int
    device: str
    dtype: str
    progress: bool
    train_cfg: object  # training.config.TrainConfig
    skip: set
    runner: object = None  # welfare_axis.stages.StageRunner
    naive: tuple = None  # (model, tokenizer) of the maze-naive model
    base: str = ""  # the trained model is `base` with `checkpoint` loaded on it
    checkpoint: str | None = None
    _trained: tuple | None = field(default=None, repr=False)

    @property
    def maze(self):
        return self.train_cfg.maze

    @property
    def common(self) -> dict:
        return {"model": self.model_id, "seed": self.seed, "maze": self.maze.to_dict(), "dtype": self.dtype}

    @property
    def trained_stage(self) -> str:
        return "plant" if self.plant else "train_rl" if "rl" in self.training else "train_sft"

    def dir(self, stage: str) -> Path:
        return self.runner.stage_dir(stage)

    def trained(self) -> tuple:
        """(model, tokenizer) of the trained (or planted) model, loaded on first use."""
        if self._trained is None:
            if self.plant:
                from probes.plant import PlantSpec, plant

                model, tok = load(self.model_id, None, self.device, self.dtype)
                plant(model, tok, PlantSpec.load(self.dir("plant")))
                self._trained = (model, tok)
            else:
                self._trained = load(self.base, self.checkpoint, self.device, self.dtype)
        return self._trained

    def rl_config(self):
        """RL's config: from the SFT model when SFT ran first (a full fine-tune's checkpoint is a whole model)."""
        return self.train_cfg.replace(model=self.base) if "sft" in self.training else self.train_cfg


@dataclass(frozen=True)
class Stage:
    name: str
    key: Callable[[RunContext], dict]
    run: Callable[[RunContext, Path], dict]
    deps: Callable[[RunContext], tuple] = lambda ctx: ()
    after: Callable[[RunContext], None] | None = None


def load(model_id: str, checkpoint, device: str, dtype: str):
    from training.models import load_model

    return load_model(model_id, checkpoint=checkpoint, device=device, dtype=dtype)


# -- maze evaluation and training ---------------------------------------------------------------------
def _eval(ctx: RunContext, base, checkpoint, mt, d: Path) -> dict:
    from training.evaluate import evaluate_policy

    df = evaluate_policy(base, checkpoint, n_mazes=ctx.p.eval.mazes, seed=ctx.seed, maze_config=ctx.maze, out_path=d / "episodes.parquet",
                         model_and_tokenizer=mt, progress=ctx.progress)
    return {"episodes": len(df), "golds": float(df["golds"].mean()), "molds": float(df["molds"].mean()),
            "return": float(df["return"].mean())}


def _eval_key(ctx: RunContext) -> dict:
    return {**ctx.common, "n_mazes": ctx.p.eval.mazes}


def _train_sft(ctx: RunContext, d: Path) -> dict:
    from training.sft import train_sft

    return {"checkpoint": str(train_sft(ctx.train_cfg, d, resume=(d / "config.json").exists(), progress=ctx.progress))}


def _after_sft(ctx: RunContext) -> None:
    from training.checkpoint import final_checkpoint

    ctx.checkpoint = final_checkpoint(ctx.dir("train_sft"))
    if "rl" in ctx.training:  # RL starts from the SFT model
        ctx.base, ctx.checkpoint = str(ctx.checkpoint), None


def _train_rl(ctx: RunContext, d: Path) -> dict:
    from training.rl import train_rl

    return {"checkpoint": str(train_rl(ctx.rl_config(), d, resume=(d / "config.json").exists(), progress=ctx.progress))}


def _after_rl(ctx: RunContext) -> None:
    from training.checkpoint import final_checkpoint

    ctx.checkpoint = final_checkpoint(ctx.dir("train_rl"))


def _trained_eval(ctx: RunContext, d: Path) -> dict:
    import pandas as pd

    from training.evaluate import compare_evals

    stats = _eval(ctx, ctx.base, ctx.checkpoint, ctx.trained(), d)
    naive_df = pd.read_parquet(ctx.dir("naive_eval") / "episodes.parquet")
    cmp = compare_evals(pd.read_parquet(d / "episodes.parquet"), naive_df, seed=ctx.seed)
    cmp["first_move"] = _first_move(ctx, d)
    atomic_write_json(d / "comparison.json", cmp)
    return {**stats, "comparison": cmp}


def _first_move(ctx: RunContext, d: Path) -> dict:
    """The exact first-move policy of both models on the held-out mazes: does the policy read the tiles?"""
    from core.stats import mean_diff_ci
    from training.evaluate import summarize_first_move, write_first_move_policy

    frames = {name: write_first_move_policy(model, tok, ctx.maze, ctx.p.eval.mazes, ctx.seed, d / f"first_move_{name}.parquet")
              for name, (model, tok) in (("naive", ctx.naive), ("trained", ctx.trained()))}
    diff = mean_diff_ci(frames["trained"]["expected_reward"], frames["naive"]["expected_reward"], n_boot=10000, seed=ctx.seed)
    return {**{name: summarize_first_move(df) for name, df in frames.items()}, "expected_reward_diff": diff}


# -- extraction, the planted control and the analyses ------------------------------------------------------
def _extract_key(ctx: RunContext, n: int) -> dict:
    x = ctx.p.extract
    return {**ctx.common, "n": n, "batch_size": x.batch_size, "max_moves": x.max_moves, "design": x.design}


def _n_naive(ctx: RunContext) -> int:
    return ctx.p.extract.n_naive or ctx.p.extract.n


def _extract(ctx: RunContext, mt, n: int, d: Path) -> dict:
    from probes.extract import extract_vectors

    x = ctx.p.extract
    cv = extract_vectors(*mt, n, seed=ctx.seed, maze_config=ctx.maze, batch_size=x.batch_size, progress=ctx.progress,
                         max_moves=x.max_moves, out_dir=d, design=x.design)
    return {"n_per_class": n, "n_layers": cv.n_layers, "max_moves": cv.meta["max_moves"], "design": x.design}


def _plant_key(ctx: RunContext) -> dict:
    q = ctx.p.plant
    return {"kind": ctx.plant, "seed": ctx.seed, "scale": q.scale, "layer": q.layer, "noise": q.noise, "source": "lexicon"}


def _plant(ctx: RunContext, d: Path) -> dict:
    from probes import ConceptVectors
    from probes.plant import make_plant

    q = ctx.p.plant
    naive = ConceptVectors.load(ctx.dir("extract_naive"))
    spec = make_plant(*ctx.naive, ctx.plant, naive.class_means, ctx.maze, layer=q.layer, scale=q.scale, seed=ctx.seed,
                      batch_size=ctx.p.extract.batch_size, noise=q.noise)
    spec.info["dir"] = str(d.resolve())  # extraction meta records it, so analyze can rebuild the planted model
    spec.save(d)
    return {"kind": ctx.plant, "layer": spec.layer, "norm": float(spec.direction.norm()), **spec.info}


def _analyze(ctx: RunContext, d: Path) -> dict:
    from probes.analyze import run_analyses

    summary = run_analyses(ctx.dir("extract_trained"), d, control_dir=ctx.dir("extract_naive"), seed=ctx.seed, device=ctx.device,
                           batch_size=ctx.p.analyze.batch_size, stories=ctx.stories, progress=ctx.progress)
    return {"l_star": summary.get("l_star"), "cos_min": (summary.get("cos_mold_gold") or {}).get("min")}


# -- steering ---------------------------------------------------------------------------------------------
def _steer_key(ctx: RunContext) -> dict:
    s = ctx.p.steer
    key = {"alphas": s.alphas, "k": s.k, "max_new_tokens": s.max_new_tokens, "evals": s.evals, "items": s.items,
           "seed": ctx.seed, "screen_layers": s.screen_layers, "screen_ratios": s.screen_ratios, "screen_prompts": s.screen_prompts,
           "unit_ratio": s.unit_ratio, "n_random": s.n_random, "at_l_star": s.at_l_star, "stories": ctx.stories_key,
           "protocol": PROTOCOL.parts_stamp(*STEER_RULES)}
    return {**key, "secondary": False} if SECONDARY in ctx.skip else key


def _vectors(ctx: RunContext):
    from probes import ConceptVectors

    return ConceptVectors.load(ctx.dir("extract_trained")), ConceptVectors.load(ctx.dir("extract_naive"))


def _steer_naive(ctx: RunContext, d: Path) -> dict:
    from probes.extract import load_examples
    from steering.axis_claim import run_axis_claim

    vectors, control = _vectors(ctx)
    examples, acts = load_examples(ctx.dir("extract_trained"), (vectors.n_layers, vectors.hidden_size))
    axis = run_axis_claim(*ctx.naive, vectors, acts, examples, d, protocol=PROTOCOL, maze_config=ctx.maze, seed=ctx.seed,
                          stories=ctx.stories, progress=ctx.progress)
    primary = {k: axis[k] for k in ("band", "confirm")} | {"layer": axis["axis"]["layer"], "z": axis["axis"]["z"]}
    if SECONDARY in ctx.skip:
        return {"axis": primary}
    return {"axis": primary, **_steer_secondary(ctx, vectors, control, d)}


def _steer_secondary(ctx: RunContext, vectors, control, d: Path) -> dict:
    """Claim 5's generated self-reports (the layer screen, then v_* and the controls) and the other steering evals."""
    from steering.claim import run_sentiment_claim

    s = ctx.p.steer
    layer_choice = json.loads((ctx.dir("analyze") / "layer_choice.json").read_text())
    claim = run_sentiment_claim(*ctx.naive, vectors, control, layer_choice["mold"], d, screen_layers=s.screen_layers,
                                screen_ratios=s.screen_ratios, screen_prompts=s.screen_prompts, unit_ratio=s.unit_ratio, alphas=s.alphas,
                                k=s.k, n_random=s.n_random, max_new_tokens=s.max_new_tokens, at_l_star=s.at_l_star,
                                maze_config=ctx.maze, seed=ctx.seed, stories=ctx.stories, progress=ctx.progress)
    others = _steer_evals(ctx, ctx.naive, vectors, control, claim["best_layer"], [e for e in s.evals if e != "sentiment"], d)
    return {"sentiment": claim, **others}


def _steer_behaviours(ctx: RunContext, d: Path) -> dict:
    """Claims 5b-5d: backtracking, refusal and confidence of the naive model steered along the welfare axis."""
    from probes.extract import load_examples
    from steering.behaviour_claims import run_behaviour_claims

    vectors = _vectors(ctx)[0]
    examples, acts = load_examples(ctx.dir("extract_trained"), (vectors.n_layers, vectors.hidden_size))
    res = run_behaviour_claims(*ctx.naive, vectors, acts, examples, d, protocol=PROTOCOL, seed=ctx.seed, progress=ctx.progress)
    return {cid: {"measurable": c["measurable"], "floor": c["floor"]["value"], "layer": (c.get("axis") or {}).get("layer")}
            for cid, c in res["claims"].items()}


def _steer_trained(ctx: RunContext, d: Path) -> dict:
    """The trained model steered with its own vectors, at the naive model's chosen layer."""
    best = json.loads((ctx.dir("steer_naive") / "stage.json").read_text())["summary"]["sentiment"]["best_layer"]
    return _steer_evals(ctx, ctx.trained(), _vectors(ctx)[0], None, best, ("sentiment",), d)


def _steer_evals(ctx: RunContext, mt, vectors, control, layer, names, d: Path) -> dict:
    from steering import evals

    s, out = ctx.p.steer, {}
    for name in names:
        r = evals.run_eval(name, *mt, vectors, control, layer, alphas=s.alphas, out_dir=d, seed=ctx.seed, progress=ctx.progress,
                           k=s.k, max_new_tokens=s.max_new_tokens * (2 if name in ("backtracking", "confidence") else 1),
                           items=s.items or None, maze_config=ctx.maze)
        out[name] = {k: v for k, v in r.items() if k in ("metric", "files")}
    return out


# -- mechanics and the report -------------------------------------------------------------------------------
def _lora_only(ctx: RunContext) -> bool:
    cfg = ctx.train_cfg
    return cfg.finetune == "lora" and ("sft" not in ctx.training or cfg.sft_finetune == "lora")


def _rl_after_sft(ctx: RunContext) -> bool:
    """RL followed SFT: the anatomy (H3, H4) reads RL's own update, not the whole training."""
    return ctx.training == "sft+rl"


def _mechanics(ctx: RunContext, d: Path) -> dict:
    """Drift naive -> trained, anatomy of RL's own update (after SFT) or of the whole training, recruitment, and the one-step
    probe from the model RL started from (`base`), all in float32 (mechanics/suite.py); models already loaded in float32
    are reused."""
    from mechanics.hypotheses import evaluate
    from mechanics.suite import measure_all, write_all
    from training.models import model_info
    from welfare_axis.stages import run_relative

    (naive, _), (trained, tok) = ctx.naive, ctx.trained()
    if ctx.dtype != "float32":
        naive, _ = load(ctx.model_id, None, ctx.device, "float32")
        trained, _ = load(ctx.base, ctx.checkpoint, ctx.device, "float32")
    probe_model, _ = load(ctx.base, None, ctx.device, "float32")  # a fresh copy: the probe sets requires_grad on every parameter
    vectors, control = _vectors(ctx)
    sizes, rl_after_sft = ctx.p.mechanics, _rl_after_sft(ctx)
    lora = ctx.train_cfg.finetune == "lora" if rl_after_sft else _lora_only(ctx)
    top = ctx.train_cfg.lora_top_layers if lora else 0  # a LoRA-only delta on the top k blocks can touch only those
    # RL's start model is probe_model (a fresh load of `base`); measure_all reads the anatomy before the probe touches it
    summaries, tables = measure_all(naive, trained, probe_model, tok, vectors, control, ctx.maze, sizes, ctx.seed, lora=lora,
                                    progress=ctx.progress, trainable_blocks=top or None,
                                    anatomy_start=probe_model if rl_after_sft else None)
    pairs = {"drift": {"start": ctx.model_id, "trained": ctx.base, "checkpoint": str(ctx.checkpoint) if ctx.checkpoint else None},
             "anatomy": {"start": ctx.base if rl_after_sft else ctx.model_id, "lora_only": lora},
             "onestep_start": ctx.base, "recruitment": {"vectors": "extract_trained", "control": "extract_naive"}}
    pairs = run_relative(pairs, d.parent)
    write_all(d, summaries, tables, {"pairs": pairs, **provenance(config={"sizes": dataclasses.asdict(sizes), "pairs": pairs}, seed=ctx.seed,
                                                                    model=model_info(trained).to_dict())})
    return {"hypotheses": {h.id: h.verdict for h in evaluate(summaries)}}


def _report(ctx: RunContext, d: Path) -> dict:
    from welfare_axis.report import build_report

    md, html = build_report(ctx.out)
    return {"report_md": str(md), "report_html": str(html)}


STUDY: tuple[Stage, ...] = (
    Stage("naive_eval", _eval_key, lambda ctx, d: _eval(ctx, ctx.model_id, None, ctx.naive, d)),
    Stage("train_sft", lambda ctx: {"train": ctx.train_cfg.to_dict()}, _train_sft, after=_after_sft),
    Stage("train_rl", lambda ctx: {"train": ctx.rl_config().to_dict()}, _train_rl,
          deps=lambda ctx: ("train_sft",) if "sft" in ctx.training else (), after=_after_rl),
    Stage("trained_eval", _eval_key, _trained_eval, deps=lambda ctx: ("naive_eval", ctx.trained_stage)),
    Stage("extract_naive", lambda ctx: _extract_key(ctx, _n_naive(ctx)), lambda ctx, d: _extract(ctx, ctx.naive, _n_naive(ctx), d)),
    Stage("plant", _plant_key, _plant, deps=lambda ctx: ("extract_naive",)),
    Stage("extract_trained", lambda ctx: _extract_key(ctx, ctx.p.extract.n), lambda ctx, d: _extract(ctx, ctx.trained(), ctx.p.extract.n, d),
          deps=lambda ctx: (ctx.trained_stage,)),
    Stage("analyze", lambda ctx: {"seed": ctx.seed, "stories": ctx.stories_key, "protocol": PROTOCOL.parts_stamp(*ANALYZE_RULES)}, _analyze,
          deps=lambda ctx: ("extract_naive", "extract_trained")),
    Stage("steer_naive", _steer_key, _steer_naive, deps=lambda ctx: ("analyze",)),
    Stage("steer_behaviours", lambda ctx: {"seed": ctx.seed, "protocol": PROTOCOL.parts_stamp(*BEHAVIOUR_RULES)}, _steer_behaviours,
          deps=lambda ctx: ("extract_trained",)),
    Stage("steer_trained", _steer_key, _steer_trained, deps=lambda ctx: ("steer_naive",)),
    Stage("mechanics", lambda ctx: {"sizes": dataclasses.asdict(ctx.p.mechanics), "seed": ctx.seed, "lora_only": _lora_only(ctx),
                                    "anatomy": "rl's own update" if _rl_after_sft(ctx) else "whole training"},
          _mechanics, deps=lambda ctx: ("extract_naive", "extract_trained")),
    Stage("report", lambda ctx: {"t": time.time()}, _report, deps=lambda ctx: tuple(ctx.runner.keys)),  # always rebuilt
)


def skipped(p, training: str, plant: str | None, skip: set) -> set:
    """The stages a run leaves out: training it does not do, what the preset turns off, what --skip names; a planted run
    has no policy to train or evaluate, nothing to steer but the naive model and no update to dissect."""
    out = {"train_sft"} if "sft" not in training else set()
    out |= {"train_rl"} if "rl" not in training else set()
    out |= {"steer_trained"} if not p.steer.trained else set()
    out |= {"mechanics"} if p.mechanics is None else set()
    out |= set(skip)
    if plant:
        return out | {"naive_eval", "train_sft", "train_rl", "trained_eval", "steer_trained", "mechanics"}
    return out | {"plant"}


def run_study(ctx: RunContext) -> None:
    """Every stage of the table that applies, in order."""
    for stage in STUDY:
        if stage.name in ctx.skip:
            continue
        ctx.runner.run(stage.name, stage.key(ctx), lambda d, s=stage: s.run(ctx, d), deps=stage.deps(ctx))
        if stage.after is not None:
            stage.after(ctx)
