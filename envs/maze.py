"""`MazeEnv`: the semantically neutral text maze of the study as a Gymnasium env.

One observation is the user message of one turn; the chat history belongs to the
caller. Actions are those of `Discrete(4)`: 0..3 = N, E, S, W. Free-text replies are
parsed by the `envs.TextActions` wrapper; an unparseable reply is the invalid move
(`MazeEnv.step_invalid`): the agent stays put and pays the step penalty.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import gymnasium as gym
import numpy as np

from envs.generator import DIRECTIONS, generate_grid
from envs.parse import CARDINAL_LETTERS, RELATIVE_LETTERS
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
RESET_OPTIONS = ("maze_seed",)


@dataclass
class MazeConfig:
    """Every knob of the maze; defaults are the paper's."""

    size: int = 100
    """grid side (the paper: 100)"""
    n_moves: int = 15
    """moves per episode (the paper: 15)"""
    wind_prob: float = 0.1
    """probability that wind pushes the agent one more tile after a move (the paper: 0.1)"""
    tile_set: str = "office"
    """symbol set for Path/Mold/Gold (the default office set: receipt, card index, triangular ruler)"""
    permutation: str = "pmg"
    """which base symbol path/mold/gold take (pmg is the default order; pgm swaps mold and gold)"""
    symbols: tuple[str, str, str] | None = None
    """three symbols for path, mold, gold; overrides tile_set and permutation when given"""
    phrasing: str = "cardinal"
    """how the prompt names directions and the reply's letters: cardinal (north.. / N E S W) or relative (ahead.. / A R B L)"""
    gold_reward: float = 20.0
    """reward for entering a Gold tile"""
    mold_reward: float = -10.0
    """reward for entering a Mold tile"""
    step_penalty: float = -0.1
    """reward of every move (once per move: ours; the public code counted 16 for 15 moves)"""

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


def _is_int(value) -> bool:
    """A Python or numpy integer (0-d integer arrays included), never a bool."""
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _check_action(action) -> int:
    if not _is_int(action):
        hint = "; wrap the env in envs.TextActions to play free-text replies" if isinstance(action, str) or action is None else ""
        raise TypeError(
            f"MazeEnv.step takes an action of its Discrete(4) space (an int 0..3 = N, E, S, W), "
            f"got {type(action).__name__} {action!r}{hint}"
        )
    direction = int(action)
    if not 0 <= direction < 4:
        raise ValueError(f"action must be 0..3 (N, E, S, W), got {direction}")
    return direction


def _check_reset_options(options) -> int | None:
    """The maze seed of valid `reset(options=...)`, or None; refuses unknown keys and wrong types."""
    if options is None:
        return None
    if not isinstance(options, Mapping):
        raise TypeError(f"reset options must be a dict, got {type(options).__name__}")
    unknown = sorted(str(k) for k in options if k not in RESET_OPTIONS)
    if unknown:
        raise ValueError(f"unknown reset option(s) {', '.join(map(repr, unknown))}; MazeEnv.reset takes {', '.join(RESET_OPTIONS)}")
    maze_seed = options.get("maze_seed")
    if maze_seed is None:
        return None
    if not _is_int(maze_seed):
        raise TypeError(f"reset option maze_seed must be an int, got {type(maze_seed).__name__} {maze_seed!r}")
    if int(maze_seed) < 0:
        raise ValueError(f"reset option maze_seed must be non-negative, got {int(maze_seed)}")
    return int(maze_seed)


class MazeEnv(gym.Env):
    """Text maze of the study: 15 moves over Path, Mold and Gold, shown only as neutral symbols.

    ## Description
    A 100x100 grid (`size`) with a Mold outer ring. Inside, a random walk carves Path out of
    Mold; Mold is then thinned to just under half the interior (the fewest random flips; tiny
    grids whose walk leaves under 10% Mold get Path flipped back), and
    max(1, floor(0.2 * interior Mold)) Gold tiles are scattered on Path. The tile kinds are
    never named: the text shows one symbol per kind (`tile_set`, default `office`: Path 🧾,
    Mold 📇, Gold 📐; `permutation` reassigns them, e.g. `pgm` swaps Mold and Gold).
    Tiles melt: every tile the agent enters becomes Mold for the rest of the episode.

    ## Action Space
    `Discrete(4)`: 0 = north (y - 1), 1 = east (x + 1), 2 = south (y + 1), 3 = west (x - 1).
    `step` takes a Python or numpy int 0..3 only: floats, bools, strings and None raise
    TypeError, other ints ValueError. A move off the grid (only possible on small grids) is
    blocked: nothing is entered and the step penalty is paid.
    Free-text replies are played through the `envs.TextActions` wrapper, which parses them with
    `envs.parse_action`; a reply that names no single direction is the invalid move
    (`step_invalid`): the agent stays put, pays the step penalty, `info["invalid_moves"]`
    counts it, and the wind can still blow.

    ## Observation Space
    `Text`: the user message of one turn (the chat history belongs to the caller):
    "You are in a maze. Currently, you're at location (x, y). To the north there is 🧾; to the
    east there is 📇; ... Where do you move? Output only N/E/S/W without punctuation."
    The four neighbours are listed in an order fixed per maze; off-grid neighbours read as Mold.
    `phrasing="relative"` says above/right/below/left and asks for U/R/D/L. After the wind
    blew, the message starts with "A strong wind from the west blew you east! ".

    ## Starting State
    The agent starts on the Path cell nearest the centre (Manhattan distance; ties by row, then
    column); the start tile melts at reset. `reset(seed=...)` seeds the wind and, unless
    given, the maze; `options={"maze_seed": int}` fixes the maze (map, start, neighbour order)
    independently of the wind, so a GRPO group shares its maze. `maze_seed` is the only
    option: other keys, non-int or negative seeds are refused.

    ## Rewards
    Each move pays the step penalty -0.1 once, plus +20 for each Gold and -10 for each Mold
    entered (Path adds nothing). Wind: after each move (valid or not), with probability 10%
    (`wind_prob`) the wind pushes the agent one more tile in a uniformly random direction;
    both tiles entered count.

    ## Episode End
    Never terminated; truncated after 15 moves (`n_moves`). Stepping after that raises
    RuntimeError: call `reset()` for a new episode.

    ## Information
    `reset`: position (x, y), maze_seed, clause_order, golds, molds, moves. `step`: position,
    entered (tile names, two with wind), golds, molds, wind, wind_direction (a letter or None),
    action (a letter or "invalid"), invalid, invalid_moves, moves, maze_seed.

    ## Arguments
    `MazeEnv(config=None, render_mode=None, **overrides)`: a `MazeConfig` (size, n_moves,
    wind_prob, tile_set, permutation, symbols, phrasing, gold_reward, mold_reward,
    step_penalty; the numbers above are its defaults) and/or keyword overrides of its fields
    (as `gym.make("WelfareMaze-v0", size=20)` passes them); `render_mode` "ansi" (render()
    returns a local map) or "human" (prints it after every reset and step).
    """

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
        maze_seed = _check_reset_options(options)  # before seeding: a refused reset changes nothing
        super().reset(seed=seed)
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
        """One move: `action` is an element of `Discrete(4)` (a Python or numpy int 0..3 = N, E, S, W)."""
        return self._play(_check_action(action))

    def step_invalid(self):
        """The turn of a reply that names no move (what `TextActions` plays for one): the agent stays
        put, pays the step penalty, `info["invalid_moves"]` counts it, and the wind can still blow."""
        return self._play(None)

    def _play(self, direction: int | None):
        if self.grid is None:
            raise RuntimeError("call reset() before step()")
        if self.moves >= self.config.n_moves:
            raise RuntimeError(
                f"the episode is over (truncated after {self.config.n_moves} moves); call reset() to start a new one"
            )
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
