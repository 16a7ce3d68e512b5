"""The verdict protocol: every rule that decides a claim's verdict, as data.

It lives in probes/ because the analyses are the first package that reads it (the package order is
envs -> training -> probes -> steering -> mechanics -> welfare_axis). A rule lives here and nowhere
else; the claims (welfare_axis/claims.py), the analyses and the
steering claim read it. Its version and a hash of its content go into claims.json and the
report header. Changing any field changes the hash; changing a rule also bumps `VERSION` and
adds an entry to docs/protocol.md's change log (what, why, verdicts before and after).

Exploratory vs confirmatory: a verdict is confirmatory only on a seed whose results never
informed a rule (`EXPLORATION_SEEDS` lists the ones that did). Mazes, trajectories, prompt
draws and null directions are all drawn from the run's seed.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field

VERSION = "1.3"

# Seeds whose results were looked at while any rule below was written or changed.
EXPLORATION_SEEDS: tuple[int, ...] = (0,)

NULL_FAMILIES = ("shuffled", "covariance", "isotropic")


@dataclass(frozen=True)
class NullSpec:
    """Null directions: `draws` per family; a verdict must clear every family (the decisive one is the widest)."""

    families: tuple[str, ...] = NULL_FAMILIES  # shuffled-label diffs of means, Gaussian with the layer's covariance, isotropic
    draws: int = 200  # per family: enough that a 95% band is a 95% band (>= 100)
    alpha: float = 0.05  # family-wise level, one-sided in the predicted direction


@dataclass(frozen=True)
class LayerBand:
    """Layers the data may choose from (block inputs, probes/layers.py): [ceil(start * L), L - end_offset]."""

    start: float = 0.25
    end_offset: int = 2

    def layers(self, n_layers: int) -> list[int]:
        lo = max(1, math.ceil(self.start * n_layers))
        hi = max(lo, n_layers - self.end_offset)
        return list(range(lo, min(hi, n_layers - 1) + 1))


@dataclass(frozen=True)
class FixedLayers:
    """Layers fixed by the study's conventions (fractions of L, floored)."""

    logit_lens: float = 5 / 6  # claim 2
    emotion: float = 2 / 3  # claim 3 and the tile-mean cosines

    def logit_lens_layer(self, n_layers: int) -> int:
        return math.floor(self.logit_lens * n_layers)

    def emotion_layer(self, n_layers: int) -> int:
        return math.floor(self.emotion * n_layers)


@dataclass(frozen=True)
class Claim1:
    """Antiparallelism, on three disjoint thirds of the mazes: the whitener's third, half A picks the layer, half B reads it."""

    primary_space: str = "raw"  # the paper's; "whitened" is reported as secondary
    max_cos: float = -0.5  # half-B cosine at the chosen layer must be at most this
    naive_margin: float = 0.2  # ... and this much below the naive model's (equal N, same procedure) at that layer
    whitener_fraction: float = 1 / 3  # mazes used only to fit the whitener


@dataclass(frozen=True)
class Claim2:
    """Logit lens at the fixed lens layer: v_Mold promotes failure tokens, v_Gold suppresses them."""

    beat_naive: bool = True  # v_Mold above u_Mold's failure score and v_Gold below u_Gold's


@dataclass(frozen=True)
class Claim3:
    """Emotion alignment at the fixed emotion layer."""

    max_slope: float = -0.5
    r_ci_low_above: float = 0.0


@dataclass(frozen=True)
class Claim4:
    """Tracking on paired trajectories (same prompt, only the final move differs), the trained v_* on both models."""

    primary: str = "pooled raw d"  # within-letter and whitened d are secondary
    layer_space: str = "raw"  # d is read at l* of this space's layer rule (chosen on the extraction data, not these trajectories)
    trained_ci_low_min: float = 1.0  # both d_gold and d_mold: the 95% CI's low end at least this
    naive_ci_abs_max: float = 0.5  # the naive model on the same vector: its whole CI inside (-this, +this)
    n_states: int = 96  # paired maze states (each one gold-final and one mold-final trajectory); a multiple of 48 keeps letters and lengths balanced
    boot: int = 2000


@dataclass(frozen=True)
class Claim5:
    """Steering the maze-naive model along one welfare axis, unit(v_Gold) - unit(v_Mold).

    Primary: the derivative of the teacher-forced sentiment log-odds per unit alpha, max over the
    band of its z against each null family (family-wise p), and at the selected layer its z must
    clear every family's 95th percentile of null maxima; the positive control (a valence direction
    from emotion stories) must clear the nulls the same way, else "not measured"; then a finite
    step at the selected layer checks the sign (mean log-odds change per prompt, a t interval
    above 0; a linearity check on the same prompts, not an independent confirmation).
    Secondary (reported, not deciding): the generated self-reports of the steering stage (the
    preset's alphas, samples and layers; steering/claim.py).
    """

    confirm_alpha: float = 2.0  # the finite-alpha confirmation: +-this, in units of unit_ratio x the residual norm
    unit_ratio: float = 0.1  # alpha 1 adds this fraction of the mean residual norm at the layer


@dataclass(frozen=True)
class BehaviourClaim:
    """Claims 5b-5d: steering the maze-naive model along the welfare axis unit(v_Gold) - unit(v_Mold) moves a behaviour.

    Read as claim 5's primary is, on the behaviour's own items: the derivative per unit alpha of the teacher-forced
    log-odds log p(toward opening) - log p(away opening), averaged over items and opening pairs; max z over the band
    against every null family (family-wise p < nulls.alpha); at the selected layer a z above every family's 95th
    percentile of null maxima; and a finite step of +-claim5.confirm_alpha there moving the log-odds up (prompt-cluster
    t CI above 0). The predicted sign: the welfare axis makes `toward` likelier (the paper: v_Mold brings more
    backtracking, more refusal, lower P(True)). First the naive model must show the behaviour at all: its
    `floor_metric` at least `floor`, else "not measurable on this model" with the measured value. Where a positive
    control exists it must clear the nulls the same way, else "not measured".
    """

    id: str
    behaviour: str
    toward: tuple[str, ...]  # reply openings (after the item's own reply prefix) the welfare axis should make likelier
    away: tuple[str, ...]  # paired one to one with `toward`
    floor_metric: str
    floor: float
    n_items: int
    answer_tokens: int = 0  # the model's own greedy answer (unsteered) that the items build on, at most this many tokens
    positive_control: str = ""  # "" where none exists


BACKTRACKING = BehaviourClaim(
    "5b", "backtracking", toward=("\n\nSo the final answer is", "\n\nTherefore, the answer is"),
    away=("\n\nWait, let me check", "\n\nActually, let me recheck"),
    floor_metric="arithmetic accuracy of the naive model's own greedy answers (unsteered)", floor=0.25, n_items=40, answer_tokens=96)
REFUSAL = BehaviourClaim(
    "5c", "refusal", toward=("Sure, here", "Of course! Here"), away=("I'm sorry, but I can't", "I can't help with that"),
    floor_metric="mean refusal log-odds of harmful minus benign requests on the test half (nats, unsteered)", floor=1.0,
    n_items=60, positive_control="the naive model's compliance direction: mean residual of benign minus harmful requests "
                                 "at the generation position, from the other half of the requests")
CONFIDENCE = BehaviourClaim(
    "5d", "confidence", toward=("True",), away=("False",),
    floor_metric="P(True) + P(False) of the next token after the confidence question (unsteered mean)", floor=0.5, n_items=40,
    answer_tokens=96)


@dataclass(frozen=True)
class Claim6:
    """Robustness as a matrix (`welfare-axis robustness`): every claim's verdict in named variants of one study config.

    A claim survives when it is reproduced in the reference variant and in every other variant that ran. Claim 6 is
    reproduced if every claim the reference reproduces survives all `required` variants, not reproduced if one of them
    fails in some variant, and not measured if a required variant did not run, the reference reproduces no claim
    (nothing can survive), or (`learning_gate`) the reference or a required variant did not learn the task: its trained
    model's first-move expected reward on held-out mazes minus the naive model's has a CI (trained_eval) not above 0.
    A variant whose training failed tests nothing about what training does."""

    reference: str = "sft+rl"  # the preset's own arm
    required: tuple[str, ...] = ("sft", "tile-swap", "other-algorithm")  # training arm, tile mapping, RL algorithm
    learning_gate: bool = True
    exploration_seeds: tuple[int, ...] = (1,)  # seed 1's matrix was read before the learning gate was written


@dataclass(frozen=True)
class TitleQuestion:
    """RL against SFT (`welfare-axis mechanics matched --extract`, hypothesis H5m in mechanics/hypotheses.py): from one start
    model, two arms matched in everything but whose moves they train on; does RL move claim 1's statistic more or less
    than SFT per unit of task progress?

    Progress is the first move's expected episode value on held-out mazes minus the start model's: the best total tile
    reward over the episode that starts with the chosen direction (true map, wind ignored), averaged under the model's
    exact first-move policy. SFT continues the start model's own SFT task with RL's decisions per step. Each arm must
    have learned: its progress at its last checkpoint has a CI above 0 (the maze bootstrap), else H5m is not measured.
    The contrast's CI resamples held-out mazes and the extraction's trajectories (within class) together, one draw for
    every checkpoint of both arms; a contrast whose resamples find a matched level in fewer than `min_valid_boot` of the
    draws is not measured."""

    progress: str = "first-move expected episode value (best total tile reward over the episode, wind ignored)"
    sft_task: str = "the start model's own SFT task, RL's decisions per step"
    learning_gate: bool = True  # each arm's last-checkpoint progress CI above 0
    resample: tuple[str, ...] = ("held-out mazes", "extraction trajectories")
    min_valid_boot: float = 0.95
    statistic: str = "antiparallelism: -min over the band of cos(v_Mold, v_Gold), raw vectors"
    exploration_seeds: tuple[int, ...] = (1,)  # seed 1's matched arms were read before these rules were written


@dataclass(frozen=True)
class Protocol:
    version: str = VERSION
    nulls: NullSpec = field(default_factory=NullSpec)
    band: LayerBand = field(default_factory=LayerBand)
    fixed: FixedLayers = field(default_factory=FixedLayers)
    claim1: Claim1 = field(default_factory=Claim1)
    claim2: Claim2 = field(default_factory=Claim2)
    claim3: Claim3 = field(default_factory=Claim3)
    claim4: Claim4 = field(default_factory=Claim4)
    claim5: Claim5 = field(default_factory=Claim5)
    behaviours: tuple[BehaviourClaim, ...] = (BACKTRACKING, REFUSAL, CONFIDENCE)  # claims 5b, 5c, 5d
    claim6: Claim6 = field(default_factory=Claim6)
    title: TitleQuestion = field(default_factory=TitleQuestion)
    ci_level: float = 0.95
    reliability_target: float = 0.9  # split-half cosine wanted at the chosen layers (a caveat, not a rule)
    exploration_seeds: tuple[int, ...] = EXPLORATION_SEEDS

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def hash(self) -> str:
        blob = json.dumps(self.to_dict(), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def ci_percentiles(self) -> tuple[float, float]:
        tail = round(100 * (1 - self.ci_level) / 2, 10)  # 2.5, not 2.4999999999999996
        return tail, 100 - tail

    def stamp(self) -> dict:
        """What every verdict-bearing artifact records."""
        return {"version": self.version, "hash": self.hash}

    def parts_stamp(self, *parts: str) -> dict:
        """A hash of the named parts only: what a read-out stage's key holds, so a change to one claim's rule re-runs
        the stages that read it and no other."""
        d = self.to_dict()
        blob = json.dumps({k: d[k] for k in parts}, sort_keys=True, default=str)
        return {"parts": list(parts), "hash": hashlib.sha256(blob.encode()).hexdigest()[:16]}

    def status(self, seed: int, plant: str | None = None, part: str | None = None) -> str:
        """'exploratory' on a seed that informed a rule, 'control' for a planted run, else 'confirmatory'. `part` names a
        section with exploration seeds of its own (claim6, title), whose verdicts also read the claims' rules."""
        if plant:
            return "control"
        seeds = {*self.exploration_seeds, *(getattr(self, part).exploration_seeds if part else ())}
        return "exploratory" if seed in seeds else "confirmatory"


PROTOCOL = Protocol()
