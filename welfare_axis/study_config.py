"""`StudyConfig`: everything a `reproduce` run can change, as one tree of small dataclasses, and the named presets.

One group per stage: `eval` (the held-out maze evaluations), `extract` (concept vectors), `plant` (the planted
controls), `analyze`, `steer`, `mechanics`; training's hyperparameters are `training.config.TrainConfig` (the
`train_preset` plus `train.<field>` overrides) and the maze is `maze.<field>` (`envs.MazeConfig`, part of training's
config). Each field's docstring is its help (`welfare-axis reproduce --fields`). The verdict rules are not here:
they live in the protocol (probes/protocol.py), fixed before the data they are read on.

A preset is a named set of overrides of the defaults (the defaults are `cpu-small`), applied by the same code as
`--set` and `--config` (welfare_axis/overrides.py), so a preset is checked like any user's change. Every group checks
its own values when it is made.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from mechanics.suite import MechanicsSizes
from probes.catalog import DESIGNS
from steering.catalog import EVAL_NAMES

TRAININGS = ("rl", "sft", "sft+rl")  # "sft+rl": RL continues from the SFT checkpoint


def _at_least_one(group, *names: str) -> None:
    for name in names:
        value = getattr(group, name)
        if value is not None and value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")


@dataclass(frozen=True)
class EvalSettings:
    """The held-out maze evaluations of the naive and the trained policy."""

    mazes: int = 64
    """held-out mazes each model plays (and whose exact first-move policy is read)"""

    def __post_init__(self) -> None:
        _at_least_one(self, "mazes")


@dataclass(frozen=True)
class ExtractSettings:
    """Concept-vector extraction from scripted trajectories (probes/extract.py)."""

    n: int = 800
    """scripted trajectories per class for the trained (or planted) model's v_* (with design paired: maze states)"""
    n_naive: int | None = 1700
    """trajectories per class for the maze-naive control's u_* (none: n); the naive model separates the classes less, so
    its vectors need more for the same split-half reliability"""
    max_moves: int | None = 1
    """scripted trajectories of 1..this many moves (none: the maze's n_moves); 1 move costs about half a 1-2 mix"""
    design: str = "independent"
    """independent (trajectories drawn per class) or paired (one gold- and one mold-final trajectory per maze state)"""
    batch_size: int = 16
    """sequences per forward pass while extracting (memory, not results)"""

    def __post_init__(self) -> None:
        _at_least_one(self, "n", "n_naive", "max_moves", "batch_size")
        if self.design not in DESIGNS:
            raise ValueError(f"design must be one of {', '.join(DESIGNS)}, got {self.design!r}")


@dataclass(frozen=True)
class PlantSettings:
    """The planted controls of `reproduce --plant` (probes/plant.py)."""

    layer: int | None = None
    """layer of the planted axis (none: probes.plant.plant_layer, one no fixed-layer claim reads)"""
    scale: float = 2.0
    """the planted axis's norm relative to the natural Gold - Mold difference, in standardised units"""
    noise: float = 0.5
    """per-move relative SD of the plant's size"""

    def __post_init__(self) -> None:
        if self.scale <= 0 or self.noise < 0 or (self.layer is not None and self.layer < 1):
            raise ValueError("plant scale must be > 0, noise >= 0 and layer >= 1")


@dataclass(frozen=True)
class AnalyzeSettings:
    """The geometric analyses (probes/analyze.py); their verdict rules are the protocol's."""

    batch_size: int = 16
    """sequences per forward pass for the logit lens and the emotion stories (memory, not results)"""

    def __post_init__(self) -> None:
        _at_least_one(self, "batch_size")


@dataclass(frozen=True)
class SteerSettings:
    """Steering: claim 5's layer screen and generated self-reports, and the other steering evals (steering/)."""

    alphas: tuple[float, ...] = (-4.0, 0.0, 4.0)
    """alpha grid of the generated steering evals, in units of unit_ratio x the layer's mean residual norm"""
    k: int = 1
    """samples per prompt and condition"""
    max_new_tokens: int = 32
    """reply length in tokens (doubled for the backtracking and confidence answers)"""
    evals: tuple[str, ...] = ("sentiment",)
    """which steering evals run on the naive model: sentiment, backtracking, confidence, refusal"""
    items: int = 0
    """problems / questions / requests per split for the non-sentiment evals (0: each eval's default)"""
    trained: bool = True
    """also steer the trained model with its own vectors (steer_trained)"""
    screen_layers: tuple[int, ...] | None = None
    """layers the screen tries (none: 1..L-1)"""
    screen_ratios: tuple[float, ...] = (0.25, 0.5)
    """screen strengths, fractions of the layer's mean residual norm"""
    screen_prompts: int | None = 8
    """at most this many screen prompts per readout (none: all of half a)"""
    unit_ratio: float = 0.1
    """alpha = 1 adds this fraction of the layer's mean residual norm"""
    n_random: int = 10
    """random directions for the steering controls"""
    at_l_star: bool = True
    """also run the generated eval at l* (besides the screen's best layer)"""

    def __post_init__(self) -> None:
        _at_least_one(self, "k", "max_new_tokens", "n_random", "screen_prompts")
        if not self.alphas or set(self.evals) - set(EVAL_NAMES):
            raise ValueError(f"alphas must not be empty and evals must be among {', '.join(EVAL_NAMES)}")
        if not 0 < self.unit_ratio <= 1 or not all(0 < r <= 1 for r in self.screen_ratios):
            raise ValueError("unit_ratio and screen_ratios are fractions of the residual norm in (0, 1]")
        if self.items < 0:
            raise ValueError(f"items must be at least 0, got {self.items}")


@dataclass(frozen=True)
class StudyConfig:
    """One `reproduce` run: the model, how it is trained, and every stage's settings (the defaults are `cpu-small`)."""

    name: str = "cpu-small"
    """the preset this config started from"""
    model: str = "smollm2-135m-instruct"
    """built-in name, local folder or cached Hugging Face id"""
    train_preset: str = "cpu-small"
    """training.config.TRAIN_PRESETS entry whose hyperparameters train.<field> overrides"""
    training: str = "sft+rl"
    """rl, sft, or sft+rl (RL continues from the SFT model)"""
    eval: EvalSettings = field(default_factory=EvalSettings)
    extract: ExtractSettings = field(default_factory=ExtractSettings)
    plant: PlantSettings = field(default_factory=PlantSettings)
    analyze: AnalyzeSettings = field(default_factory=AnalyzeSettings)
    steer: SteerSettings = field(default_factory=SteerSettings)
    mechanics: MechanicsSizes | None = field(default_factory=lambda: MechanicsSizes(n_maze=16, n_per_set=16))
    """the mechanics stage's sizes (none: skip it); cpu-small halves the drift / CKA episodes and off-target prompts"""
    estimates: dict = field(default_factory=dict)
    """expected seconds per stage, for the whole-run progress bar's time estimate (not settable)"""

    def __post_init__(self) -> None:
        if self.training not in TRAININGS:
            raise ValueError(f"training must be one of {', '.join(TRAININGS)}, got {self.training!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# Presets: named overrides of the defaults, in the keys of `--set` (welfare_axis/overrides.py applies them).
PRESETS: dict[str, dict] = {
    # Tiny random model, minutes: a first look and the test suite's end-to-end run.
    "smoke": {
        "model": "tiny", "train_preset": "tiny", "eval.mazes": 4, "extract.n": 48,
        "extract.n_naive": 60,  # unequal, as in cpu-small, so the test run covers a control of its own size
        "extract.max_moves": 2, "extract.batch_size": 8, "analyze.batch_size": 8,
        "steer.max_new_tokens": 8, "steer.evals": EVAL_NAMES, "steer.items": 2, "steer.screen_prompts": None,
        # a random 4-layer model has tiny natural Gold/Mold differences: a strong plant, so a correct pipeline must see it
        "plant.scale": 8.0,
        "mechanics": MechanicsSizes(n_maze=4, moves=2, n_per_set=4, batch_size=4, probe_batches=2, probe_mazes=1, probe_group=2,
                                    micro_batch=4, top_k=4, n_boot=200),
        "estimates": {"naive_eval": 2, "train_rl": 10, "train_sft": 5, "trained_eval": 2, "extract_naive": 3, "plant": 2,
                      "extract_trained": 3, "analyze": 10, "steer_naive": 20, "steer_behaviours": 5, "steer_trained": 5, "mechanics": 5, "report": 3},
    },
    # The default model on 2 CPU cores, within the hour: the defaults. At 500 trajectories per class the whitened
    # split-half reliability at l* was 0.76-0.94 (0.9 needs ~550 per class for v_Mold, ~1430 for u_Mold), hence
    # 800 / 1700 per class, paid for by fewer RL steps (docs/performance.md); 8 screen prompts per readout keep the
    # 29-layer screen to minutes; 32 new tokens are a sentence or two for VADER.
    "cpu-small": {
        "estimates": {"naive_eval": 50, "train_rl": 350, "train_sft": 730, "trained_eval": 60, "extract_naive": 550, "plant": 15,
                      "extract_trained": 280, "analyze": 200, "steer_naive": 580, "steer_behaviours": 240, "steer_trained": 70, "mechanics": 545, "report": 5},
    },
    # The paper's sizes, for GPU users (documented, not run on CPU).
    "paper": {
        "train_preset": "paper", "training": "rl", "eval.mazes": 256, "extract.n": 5000, "extract.n_naive": None,
        "extract.max_moves": None, "extract.batch_size": 64, "analyze.batch_size": 64, "plant.scale": 1.0,
        "steer.k": 20, "steer.max_new_tokens": 128, "steer.alphas": (-4.0, -2.0, 0.0, 2.0, 4.0), "steer.evals": EVAL_NAMES,
        "steer.items": 60, "steer.screen_prompts": None, "mechanics": MechanicsSizes(),
        "estimates": {"naive_eval": 600, "train_rl": 36000, "train_sft": 7200, "trained_eval": 600, "extract_naive": 1800,
                      "extract_trained": 1800, "analyze": 900, "steer_naive": 7200, "steer_behaviours": 600, "steer_trained": 3600, "mechanics": 1800, "report": 10},
    },
}
