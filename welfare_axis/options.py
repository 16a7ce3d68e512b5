"""Command-line options shared by several subcommands."""

from __future__ import annotations

import argparse

from envs import TILE_SETS, MazeConfig
from envs.maze import PHRASINGS
from envs.tiles import PERMUTATIONS


class UserError(Exception):
    """Bad input the user can fix; the message says what is wrong and how to fix it.

    Defined here, not in cli.py: under `python -m welfare_axis.cli` the cli module runs as
    __main__, so a class defined there and imported back by the commands would be a different
    class from the one `main` catches, and a user error would become an internal error."""


def add_maze_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("maze")
    g.add_argument("--size", type=int, default=100, help="grid side (>= 5; default 100)")
    g.add_argument("--tile-set", default="office", choices=sorted(TILE_SETS), help="symbol set (default office)")
    g.add_argument(
        "--permutation", default="pmg", choices=PERMUTATIONS, help="which base symbol path/mold/gold take (pgm swaps mold and gold)"
    )
    g.add_argument("--phrasing", default="cardinal", choices=PHRASINGS)
    g.add_argument("--wind", type=float, default=0.1, help="wind probability per move (default 0.1)")


def maze_config_from_args(args: argparse.Namespace) -> MazeConfig:
    return MazeConfig(
        size=args.size, tile_set=args.tile_set, permutation=args.permutation, phrasing=args.phrasing, wind_prob=args.wind
    )


def add_model_args(p: argparse.ArgumentParser, adapter: bool = True) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", default="smollm2-135m-instruct", help="built-in name, local folder or HF id (default smollm2-135m-instruct; 'tiny' for a random test model)")
    if adapter:
        g.add_argument("--adapter", default=None, help="LoRA adapter or full-weights checkpoint folder")
    g.add_argument("--device", default="cpu")
    g.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
