"""The semantically neutral Gymnasium text maze (registered as "WelfareMaze-v0")."""

import gymnasium as gym

from envs.maze import MazeConfig, MazeEnv
from envs.parse import parse_action
from envs.scripted import ScriptedTrajectory, good_policy_trajectory, paired_trajectories, scripted_trajectories
from envs.tiles import TILE_KINDS, TILE_SETS, Tile, TileSymbols, resolve_symbols
from envs.wrappers import TextActions

ENV_ID = "WelfareMaze-v0"
if ENV_ID not in gym.registry:
    gym.register(id=ENV_ID, entry_point="envs.maze:MazeEnv")

__all__ = [
    "ENV_ID",
    "MazeConfig",
    "MazeEnv",
    "ScriptedTrajectory",
    "TILE_KINDS",
    "TILE_SETS",
    "TextActions",
    "Tile",
    "TileSymbols",
    "good_policy_trajectory",
    "parse_action",
    "resolve_symbols",
    "paired_trajectories",
    "scripted_trajectories",
]
