"""Tile kinds, their rewards, and the neutral symbol sets the model sees.

The model never sees the words Mold/Gold/Path: only a symbol per tile kind.
Which symbol stands for which kind is a permutation, so the swap and 3-way
permutation controls of the study are one config field.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from enum import IntEnum


class Tile(IntEnum):
    PATH = 0
    MOLD = 1
    GOLD = 2


TILE_NAMES = {Tile.PATH: "path", Tile.MOLD: "mold", Tile.GOLD: "gold"}
# The three tile kinds by name, in the study's order: scripted trajectories, concept vectors
# (v_Mold, v_Gold, v_Path), layer choices and prompts all use these names. The order is part of
# the data: a kind's index seeds its scripted trajectories (envs/scripted.py).
TILE_KINDS = ("mold", "gold", "path")

# name -> (symbol for path, symbol for mold, symbol for gold); chosen to be affectively neutral.
TILE_SETS: dict[str, tuple[str, str, str]] = {
    "office": ("🧾", "📇", "📐"),
    "hardware": ("🔩", "📏", "🧲"),
    "shapes": ("🔷", "🔶", "🔘"),
    "letters": ("K", "Q", "J"),
}

# A permutation says which base symbol each kind uses: "pmg" keeps the set's order,
# "pgm" swaps the Mold and Gold symbols (the reward-swap control), and so on.
PERMUTATIONS = tuple("".join(p) for p in itertools.permutations("pmg"))


@dataclass(frozen=True)
class TileSymbols:
    """The symbol shown for each tile kind."""

    path: str
    mold: str
    gold: str

    def symbol(self, tile: Tile | int) -> str:
        return (self.path, self.mold, self.gold)[int(tile)]

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "mold": self.mold, "gold": self.gold}


def resolve_symbols(
    tile_set: str = "office",
    permutation: str = "pmg",
    symbols: tuple[str, str, str] | None = None,
) -> TileSymbols:
    """Symbols for (path, mold, gold) from a named set or explicit symbols, then permuted.

    Raises ValueError with a message saying how to fix bad input.
    """
    if symbols is None:
        if tile_set not in TILE_SETS:
            raise ValueError(
                f"unknown tile set {tile_set!r}; choose one of {', '.join(sorted(TILE_SETS))}"
            )
        base = TILE_SETS[tile_set]
    else:
        base = tuple(symbols)
        if len(base) != 3 or not all(isinstance(s, str) and s.strip() for s in base):
            raise ValueError("symbols must be three non-empty strings (path, mold, gold)")
    if len(set(base)) != 3:
        raise ValueError(f"tile symbols must be distinct, got {base}")
    if permutation not in PERMUTATIONS:
        raise ValueError(
            f"unknown permutation {permutation!r}; use one of {', '.join(PERMUTATIONS)} "
            "(letters p, m, g name the base symbol each of path, mold, gold takes)"
        )
    index = {"p": 0, "m": 1, "g": 2}
    path, mold, gold = (base[index[c]] for c in permutation)
    return TileSymbols(path=path, mold=mold, gold=gold)
