"""`TextActions`: play a `MazeEnv` with free-text replies (what a language model writes) as actions."""

from __future__ import annotations

import string

import gymnasium as gym

from envs.maze import MazeEnv
from envs.parse import parse_action


class TextActions(gym.Wrapper):
    """Free-text replies as actions, parsed by `envs.parse_action` in the maze's phrasing.

    A reply naming exactly one direction plays that move through the wrapped env's `step`;
    any other reply (and None, "no reply") is the invalid move, `MazeEnv.step_invalid`:
    the agent stays put, pays the step penalty, `info["invalid_moves"]` counts it, and the
    wind can still blow. Observations, rewards and infos are the maze's, unchanged.

    The action space is a `Text` space of printable characters, for sampling; `step`
    accepts any str.
    """

    def __init__(self, env: gym.Env):
        if not isinstance(env.unwrapped, MazeEnv):
            raise TypeError(f"TextActions wraps a MazeEnv, got {type(env.unwrapped).__name__}")
        super().__init__(env)
        self.action_space = gym.spaces.Text(max_length=2048, min_length=0, charset=string.printable)

    @property
    def letters(self) -> tuple[str, str, str, str]:
        """The four direction letters the maze asks for (N/E/S/W or U/R/D/L)."""
        return self.env.unwrapped.letters

    def parse(self, reply: str | None) -> int | None:
        """The direction 0..3 a reply names, or None for an invalid reply."""
        if reply is None:
            return None
        if not isinstance(reply, str):
            raise TypeError(f"TextActions.step takes a reply string (or None), got {type(reply).__name__} {reply!r}")
        return parse_action(reply, self.env.unwrapped.config.phrasing)

    def step(self, reply: str | None):
        direction = self.parse(reply)
        if direction is None:
            return self.env.unwrapped.step_invalid()
        return self.env.step(direction)
