"""The seed streams: which mazes and sampling seeds each part of the study draws.

Every random draw of a run comes from `np.random.default_rng([seed, stream, index])`, so a
step's mazes are a pure function of (seed, step) (resume replays them) and the streams
never share a maze: training, held-out evaluation, SFT and the mechanics probe each have
their own number below. A new consumer takes a new number.
"""

from __future__ import annotations

import numpy as np

TRAIN_STREAM = 0  # RL training mazes
EVAL_STREAM = 1  # held-out evaluation mazes, never trained on
SFT_STREAM = 2  # SFT's scripted trajectories
PROBE_STREAM = 3  # batches of the one-step probe (mechanics/onestep.py)


def stream_rng(seed: int, stream: int, index: int) -> np.random.Generator:
    """The generator of draw `index` (a step, a batch) of `stream` under the run's `seed`."""
    return np.random.default_rng([seed, stream, index])


def step_seeds(seed: int, step: int, n_mazes: int, stream: int = TRAIN_STREAM) -> tuple[list[int], int]:
    """Maze seeds and a rollout seed for one step: a pure function of (seed, step), so resume replays the stream."""
    rng = stream_rng(seed, stream, step)
    mazes = [int(s) for s in rng.integers(0, 2**31 - 1, size=n_mazes)]
    return mazes, int(rng.integers(2**62))
