"""`welfare-axis reproduce`: the whole study as cached, resumable stages.

naive maze eval -> training (SFT, RL, or SFT then RL from the SFT checkpoint) -> trained maze eval ->
extraction on the naive and trained models -> analyses -> steering evals of the naive
model with the trained vectors and controls (and of the trained model) -> report.
"""

from __future__ import annotations

from pathlib import Path

from core.artifacts import atomic_write_json, provenance
from probes.catalog import PLANT_KINDS
from welfare_axis.stages import STAGES
from welfare_axis.study_config import PRESETS, TRAININGS, StudyConfig
from welfare_axis.study_stages import SECONDARY

OPTIONAL_STAGES = ("steer_trained", "mechanics")  # stages no claim verdict reads: --skip may leave them out
PLANTS = PLANT_KINDS  # --plant


def get_preset(name: str) -> StudyConfig:
    """The study config of a named preset: its overrides of the defaults, checked by the code that checks --set."""
    from welfare_axis.overrides import apply_overrides

    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; use one of {', '.join(PRESETS)}")
    config, train = apply_overrides(StudyConfig(), {"name": name, **PRESETS[name]}, presets=True)
    assert not train, "a preset names its training hyperparameters by train_preset"
    return config


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
    reuse: list[str | Path] | None = None,
) -> tuple[Path, Path] | None:
    """Run (or resume) every stage of the study; returns the paths of report.md and report.html.

    With `plant` ("valence" or "random"), training is replaced by a planted axis (probes/plant.py):
    the pipeline's positive and negative control. `stories`: an emotion-stories JSON for claim 3
    and the steering positive control (default: the shipped set).
    Everything cheap is checked before any slow work; one process at a time runs in `out` (a lock).
    `stop_after`: stop once this stage is finished and return None (no report). `skip`: optional stages
    (OPTIONAL_STAGES) to leave out. `overrides`: {key: value} for the study config (welfare_axis/overrides.py:
    `--set` and `--config`). `reuse`: other run folders whose finished stages, where a stage's key and inputs match,
    are linked into this run instead of being run again (welfare-axis robustness).
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
                               train_cfg, stop_after, skip, dict(overrides or {}), reuse)
        except StoppedAfter:
            return None


def _check_choices(p: StudyConfig, train_cfg, training: str, plant: str | None, force, stop_after, skip) -> set[str]:
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


def _run_stages(p: StudyConfig, preset: str, out: Path, model_id: str, training: str, plant: str | None, stories: str | None,
                stories_key: str | None, force: set[str] | None, seed: int, device: str, dtype: str, progress: bool, train_cfg,
                stop_after: str | None = None, skip_stages: set[str] | None = None, overrides: dict | None = None, reuse=None):
    from probes import LAYER_CONVENTION
    from training.models import model_info
    from welfare_axis.stages import StageRunner
    from welfare_axis.study_stages import RunContext, load, run_study, skipped

    ctx = RunContext(p, out, model_id, training, plant, stories, stories_key, seed, device, dtype, progress, train_cfg,
                     skipped(p, training, plant, skip_stages or set()), base=model_id)
    ctx.naive = load(model_id, None, device, dtype)
    info = model_info(ctx.naive[0]).to_dict()
    run_cfg = provenance(config={"study": p.to_dict(), "train": train_cfg.to_dict()}, seed=seed, model=info)
    run_cfg.update({"preset": preset, "model": model_id, "model_info": info, "layer_convention": LAYER_CONVENTION,
                    "maze": ctx.maze.to_dict(), "training": f"plant:{plant}" if plant else training, "overrides": overrides or {}})
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "run_config.json", run_cfg)
    ctx.runner = StageRunner(out, {k: v for k, v in p.estimates.items() if k not in ctx.skip}, force=force, progress=progress,
                             stop_after=stop_after, reuse_from=reuse)
    try:
        run_study(ctx)
    finally:
        ctx.runner.close()
    return out / "report" / "report.md", out / "report" / "report.html"
