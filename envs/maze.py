"""`MazeEnv`: the semantically neutral text maze of the study as a Gymnasium env.

One observation is the user message of one turn; the chat history belongs to the
caller. Actions are 0..3 = N, E, S, W (a free-text reply or None is also accepted
and parsed; an invalid move keeps the agent in place and costs the step penalty).
"""

from __future__ import annotations

import string
from dataclasses import asdict, dataclass, field

import gymnasium as gym
import numpy as np

from envs.generator import DIRECTIONS, generate_grid
from envs.parse import CARDINAL_LETTERS, RELATIVE_LETTERS, parse_action
from envs.tiles import TILE_NAMES, Tile, TileSymbols, resolve_symbols

PHRASINGS = ("cardinal", "relative")
_CLAUSES = {
    "cardinal": ("to the north there is", "to the east there is", "to the south there is", "to the west there is"),
    "relative": ("above you there is", "to your right there is", "below you there is", "to your left there is"),
}
_WIND_FROM = {
    "cardinal": ("the north", "the east", "the south", "the west"),
    "relative": ("above", "the right", "below", "the left"),
}
_WIND_TO = {
    "cardinal": ("north", "east", "south", "west"),
    "relative": ("up", "right", "down", "left"),
}
_OPPOSITE = (2, 3, 0, 1)


@dataclass
class MazeConfig:
    """Every knob of the maze; defaults are the paper's."""

    size: int = 100
    n_moves: int = 15
    wind_prob: float = 0.1
    tile_set: str = "office"
    permutation: str = "pmg"
    symbols: tuple[str, str, str] | None = None  # overrides tile_set when given
    phrasing: str = "cardinal"
    gold_reward: float = 20.0
    mold_reward: float = -10.0
    step_penalty: float = -0.1  # once per move (ours; the public code counted 16 for 15 moves)

    def __post_init__(self) -> None:
        if self.symbols is not None:
            self.symbols = tuple(self.symbols)  # JSON round-trips give lists
        self.validate()

    def validate(self) -> None:
        if self.size < 5:
            raise ValueError(f"maze size must be at least 5, got {self.size}")
        if self.n_moves < 1:
            raise ValueError(f"n_moves must be at least 1, got {self.n_moves}")
        if not 0.0 <= self.wind_prob <= 1.0:
            raise ValueError(f"wind_prob must be in [0, 1], got {self.wind_prob}")
        if self.phrasing not in PHRASINGS:
            raise ValueError(f"unknown phrasing {self.phrasing!r}; use one of {', '.join(PHRASINGS)}")
        resolve_symbols(self.tile_set, self.permutation, self.symbols)

    def tile_reward(self, tile: int) -> float:
        """Reward for entering `tile`, on top of the move's step penalty (Path adds nothing)."""
        return self.gold_reward if tile == Tile.GOLD else self.mold_reward if tile == Tile.MOLD else 0.0

    def move_reward(self, entered) -> float:
        """A move's reward: one step penalty plus every tile entered (two when the wind blew)."""
        return self.step_penalty + sum(self.tile_reward(t) for t in entered)

    @property
    def tile_symbols(self) -> TileSymbols:
        return resolve_symbols(self.tile_set, self.permutation, self.symbols)

    @property
    def letters(self) -> tuple[str, str, str, str]:
        return CARDINAL_LETTERS if self.phrasing == "cardinal" else RELATIVE_LETTERS

    def to_dict(self) -> dict:
        d = asdict(self)
        d["symbols"] = list(self.symbols) if self.symbols else None
        return d


def _charset(symbols: TileSymbols) -> str:
    chars = set(string.printable) | set("".join(symbols.as_dict().values()))
    return "".join(sorted(chars))


class MazeEnv(gym.Env):
    """Text maze: 15 moves, Mold -10, Gold +20, a step penalty, melting tiles, 10% wind."""

    metadata = {"render_modes": ["ansi", "human"], "render_fps": 4}

    def __init__(self, config: MazeConfig | None = None, render_mode: str | None = None, **overrides):
        self.config = config if config is not None else MazeConfig(**overrides)
        if config is not None and overrides:
            self.config = MazeConfig(**{**config.to_dict(), **overrides})
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"unknown render_mode {render_mode!r}; use 'ansi' or 'human'")
        self.render_mode = render_mode
        self.symbols = self.config.tile_symbols
        self.letters = self.config.letters
        self.action_space = gym.spaces.Discrete(4)
        self.observation_space = gym.spaces.Text(max_length=2048, min_length=1, charset=_charset(self.symbols))
        self.grid: np.ndarray | None = None

    # -- episode -----------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        options = options or {}
        maze_seed = options.get("maze_seed")
        if maze_seed is None:
            maze_seed = int(self.np_random.integers(0, 2**31 - 1))
        self.maze_seed = int(maze_seed)
        maze_rng = np.random.default_rng(self.maze_seed)
        self.grid, self.pos = generate_grid(self.config.size, maze_rng)
        # Clause order is a property of the maze, so a GRPO group sharing a maze shares it.
        self.clause_order = tuple(int(i) for i in maze_rng.permutation(4))
        self.grid[self.pos[1], self.pos[0]] = Tile.MOLD  # the start tile melts once left
        self.moves = 0
        self.golds = 0
        self.molds = 0
        self.invalid_moves = 0
        self.total_reward = 0.0
        self.last_wind: int | None = None
        obs = self._observation()
        info = {
            "position": self.pos,
            "maze_seed": self.maze_seed,
            "clause_order": self.clause_order,
            "golds": 0,
            "molds": 0,
            "moves": 0,
        }
        if self.render_mode == "human":
            self.render()
        return obs, info

    def step(self, action):
        if self.grid is None:
            raise RuntimeError("call reset() before step()")
        if isinstance(action, str):
            direction = parse_action(action, self.config.phrasing)
        elif action is None:
            direction = None
        else:
            direction = int(action)
            if not 0 <= direction < 4:
                raise ValueError(f"action must be 0..3 (N, E, S, W), got {action}")
        entered: list[int] = []
        if direction is None:
            self.invalid_moves += 1
        else:
            self._move(direction, entered)
        wind = None
        if self.config.wind_prob > 0 and self.np_random.random() < self.config.wind_prob:
            wind = int(self.np_random.integers(0, 4))
            self._move(wind, entered)
        self.last_wind = wind

        reward = self.config.move_reward(entered)
        self.golds += sum(t == Tile.GOLD for t in entered)
        self.molds += sum(t == Tile.MOLD for t in entered)
        self.moves += 1
        self.total_reward += reward
        truncated = self.moves >= self.config.n_moves
        info = {
            "position": self.pos,
            "entered": [TILE_NAMES[Tile(t)] for t in entered],
            "golds": self.golds,
            "molds": self.molds,
            "wind": wind is not None,
            "wind_direction": None if wind is None else self.letters[wind],
            "action": "invalid" if direction is None else self.letters[direction],
            "invalid": direction is None,
            "invalid_moves": self.invalid_moves,
            "moves": self.moves,
            "maze_seed": self.maze_seed,
        }
        if self.render_mode == "human":
            self.render()
        return self._observation(), float(reward), False, truncated, info

    def _move(self, direction: int, entered: list[int]) -> None:
        dx, dy = DIRECTIONS[direction]
        x, y = self.pos[0] + dx, self.pos[1] + dy
        size = self.config.size
        if not (0 <= x < size and 0 <= y < size):
            return  # the edge of the world blocks the move; nothing is entered
        entered.append(int(self.grid[y, x]))
        self.grid[y, x] = Tile.MOLD  # melting: a visited tile is Mold from now on
        self.pos = (x, y)

    # -- text ----------------------------------------------------------------------------------
    def neighbour_tiles(self) -> tuple[int, int, int, int]:
        """Tile kind N, E, S, W of the agent (outside the grid reads as Mold)."""
        out = []
        for dx, dy in DIRECTIONS:
            x, y = self.pos[0] + dx, self.pos[1] + dy
            inside = 0 <= x < self.config.size and 0 <= y < self.config.size
            out.append(int(self.grid[y, x]) if inside else int(Tile.MOLD))
        return tuple(out)

    def _observation(self) -> str:
        phr = self.config.phrasing
        tiles = self.neighbour_tiles()
        clauses = [f"{_CLAUSES[phr][d]} {self.symbols.symbol(tiles[d])}" for d in self.clause_order]
        clauses[0] = clauses[0][0].upper() + clauses[0][1:]
        text = (
            f"You are in a maze. Currently, you're at location ({self.pos[0]}, {self.pos[1]}). "
            + "; ".join(clauses)
            + f". Where do you move? Output only {'/'.join(self.letters)} without punctuation."
        )
        if self.last_wind is not None:
            w = self.last_wind
            text = f"A strong wind from {_WIND_FROM[phr][_OPPOSITE[w]]} blew you {_WIND_TO[phr][w]}! " + text
        return text

    def render(self):
        text = self._ansi()
        if self.render_mode == "human":
            print(text)
            return None
        return text

    def _ansi(self, radius: int = 3) -> str:
        if self.grid is None:
            return "(call reset() first)"
        rows = []
        x0, y0 = self.pos
        for y in range(y0 - radius, y0 + radius + 1):
            row = []
            for x in range(x0 - radius, x0 + radius + 1):
                if (x, y) == self.pos:
                    row.append("@ ")
                elif 0 <= x < self.config.size and 0 <= y < self.config.size:
                    row.append(self.symbols.symbol(self.grid[y, x]))
                else:
                    row.append("  ")
            rows.append(" ".join(row))
        legend = f"path {self.symbols.path}  mold {self.symbols.mold}  gold {self.symbols.gold}  you @"
        totals = (
            f"move {self.moves}/{self.config.n_moves}  golds {self.golds}  molds {self.molds}  "
            f"invalid {self.invalid_moves}  return {self.total_reward:+.1f}"
        )
        return "\n".join(rows + [legend, totals])
