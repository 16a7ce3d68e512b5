"""`welfare-axis reproduce`: the whole study as cached, resumable stages.

naive maze eval -> training (SFT, RL, or SFT then RL from the SFT checkpoint) -> trained maze eval ->
extraction on the naive and trained models -> analyses -> steering evals of the naive
model with the trained vectors and controls (and of the trained model) -> report.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from core.artifacts import atomic_write_json, provenance
from mechanics.suite import MechanicsSizes
from probes.protocol import PROTOCOL
from welfare_axis.stages import EVALS, STAGES

OPTIONAL_STAGES = ("steer_trained", "mechanics")  # stages no claim verdict reads: --skip may leave them out
SECONDARY = "secondary"  # --skip secondary: steer_naive runs claim 5's primary only (no generated self-reports or other evals)
PLANTS = ("valence", "random")  # --plant (probes.plant.PLANT_KINDS, repeated so the CLI parser need not import torch; tested equal)
TRAININGS = ("rl", "sft", "sft+rl")  # "sft+rl": RL continues from the SFT checkpoint


@dataclass
class ReproducePreset:
    """Sizes of every stage; `estimates` (seconds) drive the whole-run progress bar."""

    name: str
    model: str
    train_preset: str
    training: str  # one of TRAININGS
    eval_mazes: int
    extract_n: int  # scripted trajectories per class for the trained (or planted) model's v_*
    steer_k: int
    steer_max_new_tokens: int
    alphas: tuple[float, ...]
    evals: tuple[str, ...]
    eval_items: int  # problems / questions / requests per split for the non-sentiment evals
    steer_trained: bool
    estimates: dict[str, float] = field(default_factory=dict)
    batch_size: int = 16
    extract_max_moves: int | None = None  # scripted trajectories of 1..this many moves (None: the maze's n_moves)
    extract_design: str = "independent"  # probes.extract.DESIGNS; with "paired", extract_n counts maze states
    # The maze-naive control's u_* (None: extract_n). The naive model separates the classes less
    # (smaller whitened Gold/Mold distances), so its vectors need more trajectories for the same
    # split-half reliability (the report's "reliability at l*" projects how many).
    extract_n_naive: int | None = None
    plant_layer: int | None = None  # --plant: layer of the planted axis (None: probes.plant.plant_layer, one no fixed-layer claim reads)
    plant_scale: float = 1.0  # --plant: ||e|| relative to the natural Gold-Mold difference, standardised units
    plant_noise: float = 0.5  # --plant: per-move relative SD of the plant's size
    screen_layers: tuple[int, ...] | None = None  # steering screen layers (None: 1..L-1)
    screen_ratios: tuple[float, ...] = (0.25, 0.5)  # screen strengths, fractions of the mean residual norm
    screen_prompts: int | None = None  # at most this many screen prompts per readout (None: all of half a)
    unit_ratio: float = 0.1  # generated steering: alpha = 1 adds this fraction of the mean residual norm
    n_random: int = 10  # random directions for the steering controls
    steer_at_l_star: bool = True  # also run the generated eval at l* (besides the screen's best layer)
    mechanics: MechanicsSizes | None = field(default_factory=MechanicsSizes)  # the mechanics stage's sizes (None: skip it)


REPRODUCE_PRESETS: dict[str, ReproducePreset] = {
    # Tiny random model, minutes: a first look and the test suite's end-to-end run.
    "smoke": ReproducePreset(
        name="smoke", model="tiny", train_preset="tiny", training="sft+rl", eval_mazes=4, extract_n=48,
        extract_n_naive=60,  # unequal, as in cpu-small, so the test run covers a control of its own size
        steer_k=1, steer_max_new_tokens=8, alphas=(-4.0, 0.0, 4.0), evals=EVALS, eval_items=2,
        steer_trained=True, batch_size=8, extract_max_moves=2,
        # a random 4-layer model has tiny natural Gold/Mold differences: a strong plant, so a correct pipeline must see it
        plant_scale=8.0,
        mechanics=MechanicsSizes(n_maze=4, moves=2, n_per_set=4, batch_size=4, probe_batches=2, probe_mazes=1, probe_group=2,
                                 micro_batch=4, top_k=4, n_boot=200),
        estimates={"naive_eval": 2, "train_rl": 10, "train_sft": 5, "trained_eval": 2, "extract_naive": 3, "plant": 2,
                   "extract_trained": 3, "analyze": 10, "steer_naive": 20, "steer_trained": 5, "mechanics": 5, "report": 3},
    ),
    # The default model on 2 CPU cores, within the hour. At 500 trajectories per class the whitened
    # split-half reliability at l* was 0.76-0.94 (0.9 needs ~550 per class for v_Mold, ~1430 for
    # u_Mold), hence 800 / 1700 per class here, paid for by fewer RL steps (docs/performance.md).
    "cpu-small": ReproducePreset(
        name="cpu-small", model="smollm2-135m-instruct", train_preset="cpu-small", training="sft+rl", eval_mazes=64, extract_n=800,
        extract_n_naive=1700, steer_k=1, alphas=(-4.0, 0.0, 4.0),
        # 32 new tokens: a sentence or two for VADER
        steer_max_new_tokens=32,
        # 1-move trajectories (about half the cost of a 1-2-move mix) buy the larger N
        evals=("sentiment",), eval_items=0, steer_trained=True, extract_max_moves=1,
        # 8 screen prompts per readout keep the 29-layer screen to minutes; alpha 4 adds 0.4 of the residual norm
        screen_prompts=8, screen_ratios=(0.25, 0.5), unit_ratio=0.1, plant_scale=2.0,
        # half the default drift / CKA episodes and off-target prompts; the one-step probe's rollouts and
        # gradients are the rest of the mechanics stage
        mechanics=MechanicsSizes(n_maze=16, n_per_set=16),
        # expected stage seconds on 2 cores, for the progress bar's time estimate
        estimates={"naive_eval": 50, "train_rl": 350, "train_sft": 730, "trained_eval": 60, "extract_naive": 550, "plant": 15,
                   "extract_trained": 280, "analyze": 200, "steer_naive": 580, "steer_trained": 70, "mechanics": 545, "report": 5},
    ),
    # The paper's sizes, for GPU users (documented, not run on CPU).
    "paper": ReproducePreset(
        name="paper", model="smollm2-135m-instruct", train_preset="paper", training="rl", eval_mazes=256, extract_n=5000,
        steer_k=20, steer_max_new_tokens=128, alphas=(-4.0, -2.0, 0.0, 2.0, 4.0),
        evals=EVALS, eval_items=60, steer_trained=True, batch_size=64,
        estimates={"naive_eval": 600, "train_rl": 36000, "train_sft": 7200, "trained_eval": 600, "extract_naive": 1800,
                   "extract_trained": 1800, "analyze": 900, "steer_naive": 7200, "steer_trained": 3600, "mechanics": 1800, "report": 10},
    ),
}


def get_preset(name: str) -> ReproducePreset:
    if name not in REPRODUCE_PRESETS:
        raise ValueError(f"unknown preset {name!r}; use one of {', '.join(REPRODUCE_PRESETS)}")
    return REPRODUCE_PRESETS[name]


def _load(model_id: str, checkpoint, device: str, dtype: str):
    from training.models import load_model

    return load_model(model_id, checkpoint=checkpoint, device=device, dtype=dtype)


def reproduce(
    preset: str = "cpu-small",
    out: str | Path = "runs/cpu-small",
    model: str | None = None,
    training: str | None = None,
    plant: str | None = None,
    stories: str | None = None,
    force: set[str] | None = None,
    seed: int = 0,
    device: str = "cpu",
    dtype: str = "float32",
    progress: bool = True,
    stop_after: str | None = None,
    skip: set[str] | None = None,
    overrides: dict | None = None,
) -> tuple[Path, Path] | None:
    """Run (or resume) every stage of the study; returns the paths of report.md and report.html.

    With `plant` ("valence" or "random"), training is replaced by a planted axis (probes/plant.py):
    the pipeline's positive and negative control. `stories`: an emotion-stories JSON for claim 3
    and the steering positive control (default: the shipped set).
    Everything cheap is checked before any slow work; one process at a time runs in `out` (a lock).
    `stop_after`: stop once this stage is finished and return None (no report). `skip`: optional stages
    (OPTIONAL_STAGES) to leave out. `overrides`: {field: value} for the preset and training config
    (welfare_axis/overrides.py: `--set` and `--config`).
    """
    from training.config import config_from_preset
    from welfare_axis.stages import lock_run

    from welfare_axis.overrides import apply_overrides

    p, train_overrides = apply_overrides(get_preset(preset), overrides or {})
    model_id = model or p.model
    if model_id == "tiny":
        import torch

        torch.set_num_threads(1)  # the tiny model is overhead-bound; more threads only add sync cost
    training = training or p.training
    if training not in TRAININGS:
        raise ValueError(f"unknown training {training!r}; use one of {', '.join(TRAININGS)}")
    out = Path(out)
    train_cfg = config_from_preset(p.train_preset, model=model_id, seed=seed, device=device, dtype=dtype, **train_overrides)
    if training == "sft+rl" and train_cfg.sft_finetune != "full":
        raise ValueError(f"training 'sft+rl' continues RL from the SFT model, so the {p.train_preset!r} training preset "
                         "needs sft_finetune='full' (a LoRA SFT adapter is not a model to start from); use --training sft or rl")
    if plant is not None and plant not in PLANTS:
        raise ValueError(f"unknown plant {plant!r}; use one of {', '.join(PLANTS)}")
    unknown = (set(force or ()) | ({stop_after} if stop_after else set())) - set(STAGES)
    skippable = (*OPTIONAL_STAGES, SECONDARY)
    if set(skip or ()) - set(skippable):
        raise ValueError(f"only {', '.join(skippable)} can be skipped, not {', '.join(sorted(set(skip) - set(skippable)))}")
    if SECONDARY in set(skip or ()):
        skip = set(skip) | {"steer_trained"}  # it steers at the layer the secondary screen picks
    if unknown:
        raise ValueError(f"unknown stage(s) {', '.join(sorted(unknown))}; use one of {', '.join(STAGES)}")
    stories_key = _stories_key(stories)

    from welfare_axis.stages import StoppedAfter

    with lock_run(out):
        try:
            return _run_stages(p, preset, out, model_id, training, plant, stories, stories_key, force, seed, device, dtype, progress,
                               train_cfg, stop_after, set(skip or ()), dict(overrides or {}))
        except StoppedAfter:
            return None


def _stories_key(stories: str | None) -> str | None:
    """A --stories file as stage keys see it: its content (checked here, before any slow work), not its path."""
    if stories is None:
        return None
    import hashlib

    from probes.emotion import load_stories

    load_stories(stories)
    return "sha256:" + hashlib.sha256(Path(stories).read_bytes()).hexdigest()


def _run_stages(p: ReproducePreset, preset: str, out: Path, model_id: str, training: str, plant: str | None, stories: str | None,
                stories_key: str | None, force: set[str] | None, seed: int, device: str, dtype: str, progress: bool, train_cfg,
                stop_after: str | None = None, skip_stages: set[str] | None = None, overrides: dict | None = None):
    from probes import LAYER_CONVENTION, ConceptVectors
    from probes.analyze import run_analyses
    from probes.extract import extract_vectors
    from probes.plant import PlantSpec
    from probes.plant import plant as plant_model
    from steering import evals
    from training.checkpoint import final_checkpoint
    from training.evaluate import compare_evals, evaluate_policy
    from training.rl import train_rl
    from training.sft import train_sft
    from welfare_axis.report import build_report
    from welfare_axis.stages import StageRunner

    maze = train_cfg.maze
    naive_model, naive_tok = _load(model_id, None, device, dtype)
    run_cfg = provenance(config={"preset": dataclasses.asdict(p), "train": train_cfg.to_dict()}, seed=seed,
                         model=naive_model.welfare_info.to_dict())
    run_cfg.update({"preset": preset, "model": model_id, "model_info": naive_model.welfare_info.to_dict(),
                    "layer_convention": LAYER_CONVENTION, "maze": maze.to_dict(), "training": f"plant:{plant}" if plant else training,
                    "overrides": overrides or {}})
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "run_config.json", run_cfg)

    skip = {"train_sft"} if "sft" not in training else set()
    skip |= {"train_rl"} if "rl" not in training else set()
    skip |= {"steer_trained"} if not p.steer_trained else set()
    skip |= {"mechanics"} if p.mechanics is None else set()
    skip |= set(skip_stages or ())
    if plant:  # the plant is the "training": no policy to train or to evaluate, nothing to steer but the naive model, no update to dissect
        skip |= {"naive_eval", "train_sft", "train_rl", "trained_eval", "steer_trained", "mechanics"}
    else:
        skip |= {"plant"}
    estimates = {k: v for k, v in p.estimates.items() if k not in skip}
    runner = StageRunner(out, estimates, force=force, progress=progress, stop_after=stop_after)
    common = {"model": model_id, "seed": seed, "maze": maze.to_dict(), "dtype": dtype}

    try:
        ext = {**common, "n": p.extract_n, "batch_size": p.batch_size, "max_moves": p.extract_max_moves, "design": p.extract_design}
        n_naive = p.extract_n_naive or p.extract_n
        ext_naive = {**ext, "n": n_naive}
        if plant:
            runner.run("extract_naive", ext_naive, lambda d: _extract(extract_vectors, naive_model, naive_tok, p, n_naive, seed, maze, d, progress))
            runner.run("plant", {"kind": plant, "seed": seed, "scale": p.plant_scale, "layer": p.plant_layer, "noise": p.plant_noise,
                                 "source": "lexicon"},
                       lambda d: _plant(naive_model, naive_tok, plant, runner.stage_dir("extract_naive"), p, seed, maze, d),
                       deps=("extract_naive",))
            trained_model, trained_tok = _load(model_id, None, device, dtype)
            plant_model(trained_model, trained_tok, PlantSpec.load(runner.stage_dir("plant")))
            trained_stage = "plant"
        else:
            runner.run("naive_eval", {**common, "n_mazes": p.eval_mazes}, lambda d: _eval(
                evaluate_policy, model_id, None, p.eval_mazes, seed, maze, d, (naive_model, naive_tok), progress))

            base, checkpoint = model_id, None  # the trained model: `base` with the training `checkpoint` (if any) loaded on it
            if "sft" in training:
                runner.run("train_sft", {"train": train_cfg.to_dict()},
                           lambda d: {"checkpoint": str(train_sft(train_cfg, d, resume=(d / "config.json").exists(), progress=progress))})
                checkpoint = final_checkpoint(runner.stage_dir("train_sft"))
            if "rl" in training:
                rl_cfg = train_cfg
                if checkpoint is not None:  # a full fine-tune's SFT checkpoint is a whole model: RL starts from it
                    base, checkpoint = str(checkpoint), None
                    rl_cfg = train_cfg.replace(model=base)
                runner.run("train_rl", {"train": rl_cfg.to_dict()}, lambda d: {"checkpoint": str(train_rl(
                    rl_cfg, d, resume=(d / "config.json").exists(), progress=progress))}, deps=("train_sft",) if "sft" in training else ())
                checkpoint = final_checkpoint(runner.stage_dir("train_rl"))
            trained_stage = "train_rl" if "rl" in training else "train_sft"

            trained_model, trained_tok = _load(base, checkpoint, device, dtype)

            def trained_eval(d: Path) -> dict:
                import pandas as pd

                stats = _eval(evaluate_policy, base, checkpoint, p.eval_mazes, seed, maze, d, (trained_model, trained_tok), progress)
                naive_df = pd.read_parquet(runner.stage_dir("naive_eval") / "episodes.parquet")
                cmp = compare_evals(pd.read_parquet(d / "episodes.parquet"), naive_df, seed=seed)
                cmp["first_move"] = _first_move(d, maze, seed, p.eval_mazes, (naive_model, naive_tok), (trained_model, trained_tok))
                atomic_write_json(d / "comparison.json", cmp)
                return {**stats, "comparison": cmp}

            runner.run("trained_eval", {**common, "n_mazes": p.eval_mazes}, trained_eval, deps=("naive_eval", trained_stage))


            runner.run("extract_naive", ext_naive, lambda d: _extract(extract_vectors, naive_model, naive_tok, p, n_naive, seed, maze, d, progress))
        runner.run("extract_trained", ext, lambda d: _extract(extract_vectors, trained_model, trained_tok, p, p.extract_n, seed, maze, d, progress),
                   deps=(trained_stage,))

        runner.run(
            "analyze", {"seed": seed, "stories": stories_key, "protocol": PROTOCOL.stamp()},
            lambda d: _summary_keys(run_analyses(runner.stage_dir("extract_trained"), d, control_dir=runner.stage_dir("extract_naive"),
                                                 seed=seed, device=device, batch_size=p.batch_size,
                                                 stories=stories, progress=progress)),
            deps=("extract_naive", "extract_trained"),
        )
        layer_choice = json.loads((runner.stage_dir("analyze") / "layer_choice.json").read_text())
        vectors = ConceptVectors.load(runner.stage_dir("extract_trained"))
        control = ConceptVectors.load(runner.stage_dir("extract_naive"))
        steer_cfg = {"alphas": p.alphas, "k": p.steer_k, "max_new_tokens": p.steer_max_new_tokens, "evals": p.evals,
                     "items": p.eval_items, "seed": seed, "screen_layers": p.screen_layers, "screen_ratios": p.screen_ratios, "screen_prompts": p.screen_prompts,
                     "unit_ratio": p.unit_ratio, "n_random": p.n_random, "at_l_star": p.steer_at_l_star, "stories": stories_key,
                     "protocol": PROTOCOL.stamp()}
        if SECONDARY in skip:
            steer_cfg["secondary"] = False

        def steer_naive(d: Path) -> dict:
            from probes.extract import load_examples
            from steering.axis_claim import run_axis_claim
            from steering.claim import run_sentiment_claim

            examples, acts = load_examples(runner.stage_dir("extract_trained"), (vectors.n_layers, vectors.hidden_size))
            axis = run_axis_claim(naive_model, naive_tok, vectors, acts, examples, d, protocol=PROTOCOL, maze_config=maze, seed=seed,
                                  stories=stories, progress=progress)
            primary = {k: axis[k] for k in ("band", "confirm")} | {"layer": axis["axis"]["layer"], "z": axis["axis"]["z"]}
            if SECONDARY in skip:
                return {"axis": primary}
            claim = run_sentiment_claim(naive_model, naive_tok, vectors, control, layer_choice["mold"], d, screen_layers=p.screen_layers,
                                        screen_ratios=p.screen_ratios, screen_prompts=p.screen_prompts, unit_ratio=p.unit_ratio, alphas=p.alphas, k=p.steer_k,
                                        n_random=p.n_random, max_new_tokens=p.steer_max_new_tokens, at_l_star=p.steer_at_l_star,
                                        maze_config=maze, seed=seed, stories=stories, progress=progress)
            others = _steer(evals, naive_model, naive_tok, vectors, control, claim["best_layer"], p,
                            [e for e in p.evals if e != "sentiment"], seed, maze, d, progress)
            return {"axis": primary, "sentiment": claim, **others}

        runner.run("steer_naive", steer_cfg, steer_naive, deps=("analyze",))
        if "steer_trained" not in skip:  # the trained model steered with its own vectors, at the naive model's chosen layer
            best = json.loads((runner.stage_dir("steer_naive") / "stage.json").read_text())["summary"]["sentiment"]["best_layer"]
            runner.run("steer_trained", steer_cfg,
                       lambda d: _steer(evals, trained_model, trained_tok, vectors, None, best, p, ("sentiment",), seed, maze, d, progress),
                       deps=("steer_naive",))
        if "mechanics" not in skip:
            lora = train_cfg.finetune == "lora" and ("sft" not in training or train_cfg.sft_finetune == "lora")
            runner.run("mechanics", {"sizes": dataclasses.asdict(p.mechanics), "seed": seed, "lora_only": lora},
                       lambda d: _mechanics(model_id, base, checkpoint, (naive_model, trained_model, trained_tok), vectors, control, p.mechanics,
                                            maze, seed, device, dtype, lora, d, progress),
                       deps=("extract_naive", "extract_trained"))

        def report(d: Path) -> dict:
            md, html = build_report(out)
            return {"report_md": str(md), "report_html": str(html)}

        runner.run("report", {"t": time.time()}, report, deps=tuple(k for k in runner.keys))  # always rebuilt
    finally:
        runner.close()
    return out / "report" / "report.md", out / "report" / "report.html"


def _eval(evaluate_policy, model_id, checkpoint, n, seed, maze, d: Path, mt, progress) -> dict:
    df = evaluate_policy(model_id, checkpoint, n_mazes=n, seed=seed, maze_config=maze, out_path=d / "episodes.parquet",
                         model_and_tokenizer=mt, progress=progress)
    return {"episodes": len(df), "golds": float(df["golds"].mean()), "molds": float(df["molds"].mean()),
            "return": float(df["return"].mean())}


def _first_move(d: Path, maze, seed: int, n: int, naive, trained) -> dict:
    """The exact first-move policy of both models on the held-out mazes: does the policy read the tiles?"""
    from core.stats import mean_diff_ci
    from training.evaluate import summarize_first_move, write_first_move_policy

    frames = {name: write_first_move_policy(model, tok, maze, n, seed, d / f"first_move_{name}.parquet")
              for name, (model, tok) in (("naive", naive), ("trained", trained))}
    diff = mean_diff_ci(frames["trained"]["expected_reward"], frames["naive"]["expected_reward"], n_boot=10000, seed=seed)
    return {**{name: summarize_first_move(df) for name, df in frames.items()}, "expected_reward_diff": diff}


def _extract(extract_vectors, model, tok, p: ReproducePreset, n: int, seed, maze, d: Path, progress) -> dict:
    cv = extract_vectors(model, tok, n, seed=seed, maze_config=maze, batch_size=p.batch_size, progress=progress,
                         max_moves=p.extract_max_moves, out_dir=d, design=p.extract_design)
    return {"n_per_class": n, "n_layers": cv.n_layers, "max_moves": cv.meta["max_moves"], "design": p.extract_design}


def _plant(model, tok, kind: str, naive_dir: Path, p: ReproducePreset, seed: int, maze, d: Path) -> dict:
    from probes import ConceptVectors
    from probes.plant import make_plant

    naive = ConceptVectors.load(naive_dir)
    spec = make_plant(model, tok, kind, naive.class_means, maze, layer=p.plant_layer, scale=p.plant_scale, seed=seed, batch_size=p.batch_size,
                      noise=p.plant_noise)
    spec.info["dir"] = str(d.resolve())  # extraction meta records it, so analyze can rebuild the planted model
    spec.save(d)
    return {"kind": kind, "layer": spec.layer, "norm": float(spec.direction.norm()), **spec.info}


def _mechanics(model_id: str, base: str, checkpoint, loaded, vectors, control, sizes: MechanicsSizes, maze, seed: int, device: str,
               dtype: str, lora: bool, d: Path, progress: bool) -> dict:
    """Drift and anatomy naive -> trained, recruitment, and the one-step probe from the model RL started from (`base`),
    all in float32 (mechanics/suite.py); models already loaded in float32 are reused."""
    from mechanics.claims import evaluate
    from mechanics.suite import measure_all, write_all
    from welfare_axis.stages import run_relative

    naive, trained, tok = loaded
    if dtype != "float32":
        naive, _ = _load(model_id, None, device, "float32")
        trained, _ = _load(base, checkpoint, device, "float32")
    probe_model, _ = _load(base, None, device, "float32")  # a fresh copy: the probe sets requires_grad on every parameter
    summaries, tables = measure_all(naive, trained, probe_model, tok, vectors, control, maze, sizes, seed, lora=lora, progress=progress)
    pairs = {"drift_and_anatomy": {"start": model_id, "trained": base, "checkpoint": str(checkpoint) if checkpoint else None,
                                   "lora_only": lora},
             "probe_start": base, "recruitment": {"vectors": "extract_trained", "control": "extract_naive"}}
    pairs = run_relative(pairs, d.parent)
    write_all(d, summaries, tables, {"pairs": pairs, **provenance(config={"sizes": dataclasses.asdict(sizes), "pairs": pairs}, seed=seed,
                                                                    model=trained.welfare_info.to_dict())})
    return {"hypotheses": {h.id: h.verdict for h in evaluate(summaries)}}


def _summary_keys(summary: dict) -> dict:
    return {"l_star": summary.get("l_star"), "cos_min": (summary.get("cos_mold_gold") or {}).get("min")}


def _steer(evals, model, tok, vectors, control, layer, p: ReproducePreset, names, seed, maze, d: Path, progress) -> dict:
    out = {}
    for name in names:
        s = evals.run_eval(name, model, tok, vectors, control, layer, alphas=p.alphas, out_dir=d, seed=seed, progress=progress,
                           k=p.steer_k, max_new_tokens=p.steer_max_new_tokens * (2 if name in ("backtracking", "confidence") else 1),
                           items=p.eval_items or None, maze_config=maze)
        out[name] = {k: v for k, v in s.items() if k in ("metric", "files")}
    return out
