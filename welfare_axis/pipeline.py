"""`welfare-axis reproduce`: the whole study as cached, resumable stages.

naive maze eval -> training (SFT, RL, or SFT then RL from the SFT checkpoint) -> trained maze eval ->
extraction on the naive and trained models -> analyses -> steering evals of the naive
model with the trained vectors and controls (and of the trained model) -> report.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from core.artifacts import atomic_write_json, provenance
from mechanics.suite import MechanicsSizes
from welfare_axis.stages import EVALS, STAGES
from welfare_axis.study_stages import SECONDARY

OPTIONAL_STAGES = ("steer_trained", "mechanics")  # stages no claim verdict reads: --skip may leave them out
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

    def __post_init__(self) -> None:
        """Every preset, and every preset changed by --set or --config, is checked here, before any work."""
        counts = ("eval_mazes", "extract_n", "steer_k", "steer_max_new_tokens", "batch_size", "n_random")
        for name in counts + ("extract_max_moves", "extract_n_naive", "screen_prompts"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if self.training not in TRAININGS:
            raise ValueError(f"training must be one of {', '.join(TRAININGS)}, got {self.training!r}")
        if not self.alphas or set(self.evals) - set(EVALS):
            raise ValueError(f"alphas must not be empty and evals must be among {', '.join(EVALS)}")
        if self.extract_design not in ("independent", "paired"):  # probes.extract.DESIGNS
            raise ValueError(f"extract_design must be independent or paired, got {self.extract_design!r}")
        if not 0 < self.unit_ratio <= 1 or not all(0 < r <= 1 for r in self.screen_ratios):
            raise ValueError("unit_ratio and screen_ratios are fractions of the residual norm in (0, 1]")
        if self.plant_scale <= 0 or self.plant_noise < 0 or self.eval_items < 0:
            raise ValueError("plant_scale must be > 0, plant_noise and eval_items >= 0")


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
    from welfare_axis.overrides import apply_overrides
    from welfare_axis.stages import StoppedAfter, lock_run

    p, train_overrides = apply_overrides(get_preset(preset), overrides or {})
    model_id, training, out = model or p.model, training or p.training, Path(out)
    if model_id == "tiny":
        import torch

        torch.set_num_threads(1)  # the tiny model is overhead-bound; more threads only add sync cost
    train_cfg = config_from_preset(p.train_preset, model=model_id, seed=seed, device=device, dtype=dtype, **train_overrides)
    skip = _check_choices(p, train_cfg, training, plant, force, stop_after, skip)
    stories_key = _stories_key(stories)
    with lock_run(out):
        try:
            return _run_stages(p, preset, out, model_id, training, plant, stories, stories_key, force, seed, device, dtype, progress,
                               train_cfg, stop_after, skip, dict(overrides or {}))
        except StoppedAfter:
            return None


def _check_choices(p: ReproducePreset, train_cfg, training: str, plant: str | None, force, stop_after, skip) -> set[str]:
    """Refuse bad choices before any slow work; the stages to skip (--skip secondary also skips steer_trained)."""
    if training not in TRAININGS:
        raise ValueError(f"unknown training {training!r}; use one of {', '.join(TRAININGS)}")
    if training == "sft+rl" and train_cfg.sft_finetune != "full":
        raise ValueError(f"training 'sft+rl' continues RL from the SFT model, so the {p.train_preset!r} training preset "
                         "needs sft_finetune='full' (a LoRA SFT adapter is not a model to start from); use --training sft or rl")
    if plant is not None and plant not in PLANTS:
        raise ValueError(f"unknown plant {plant!r}; use one of {', '.join(PLANTS)}")
    skip, skippable = set(skip or ()), (*OPTIONAL_STAGES, SECONDARY)
    if skip - set(skippable):
        raise ValueError(f"only {', '.join(skippable)} can be skipped, not {', '.join(sorted(skip - set(skippable)))}")
    unknown = (set(force or ()) | ({stop_after} if stop_after else set())) - set(STAGES)
    if unknown:
        raise ValueError(f"unknown stage(s) {', '.join(sorted(unknown))}; use one of {', '.join(STAGES)}")
    return skip | {"steer_trained"} if SECONDARY in skip else skip  # steer_trained steers at the layer the secondary screen picks


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
    from probes import LAYER_CONVENTION
    from training.models import model_info
    from welfare_axis.stages import StageRunner
    from welfare_axis.study_stages import RunContext, load, run_study, skipped

    ctx = RunContext(p, out, model_id, training, plant, stories, stories_key, seed, device, dtype, progress, train_cfg,
                     skipped(p, training, plant, skip_stages or set()), base=model_id)
    ctx.naive = load(model_id, None, device, dtype)
    info = model_info(ctx.naive[0]).to_dict()
    run_cfg = provenance(config={"preset": dataclasses.asdict(p), "train": train_cfg.to_dict()}, seed=seed, model=info)
    run_cfg.update({"preset": preset, "model": model_id, "model_info": info, "layer_convention": LAYER_CONVENTION,
                    "maze": ctx.maze.to_dict(), "training": f"plant:{plant}" if plant else training, "overrides": overrides or {}})
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "run_config.json", run_cfg)
    ctx.runner = StageRunner(out, {k: v for k, v in p.estimates.items() if k not in ctx.skip}, force=force, progress=progress,
                             stop_after=stop_after)
    try:
        run_study(ctx)
    finally:
        ctx.runner.close()
    return out / "report" / "report.md", out / "report" / "report.html"
