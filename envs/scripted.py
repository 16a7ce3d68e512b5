"""Scripted (off-policy) trajectories.

* Concept-vector data (docs/study.md, "Concept vectors"): per class Mold/Gold/Path, an
  episode of n in 1..15 moves whose first n-1 moves go over fresh Path and whose
  last move enters a tile of the class, each in its own maze, with the final
  direction balanced over N/E/S/W. Played without wind so the script is exact.
  `paired_trajectories` is the paired design: per maze state, one such episode per class
  sharing all moves but the last.
* A good policy (maximise Gold, avoid Mold, with lookahead on the true map) for SFT data.

Trajectories are replayed through `MazeEnv`, so the transcript is exactly what a model
would have seen.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from envs.generator import DIRECTIONS
from envs.maze import MazeConfig, MazeEnv
from envs.tiles import TILE_KINDS, Tile

_KIND_TILE = {"mold": Tile.MOLD, "gold": Tile.GOLD, "path": Tile.PATH}
_MAX_EXPANSIONS = 4000
_MAX_MAZES = 200
_MAX_PAIRED_MAZES = 2000  # three fixed neighbours of one cell are rarer than one


@dataclass
class ScriptedTrajectory:
    kind: str  # "mold" | "gold" | "path" | "good"
    maze_seed: int
    actions: list[int]
    messages: list[dict[str, str]]  # user/assistant turns, ending with the assistant's last move
    golds: int = 0
    molds: int = 0
    total_reward: float = 0.0
    info: dict = field(default_factory=dict)

    @property
    def n_moves(self) -> int:
        return len(self.actions)

    @property
    def final_direction(self) -> int:
        return self.actions[-1]


def _neighbour(pos: tuple[int, int], d: int, size: int) -> tuple[int, int] | None:
    x, y = pos[0] + DIRECTIONS[d][0], pos[1] + DIRECTIONS[d][1]
    return (x, y) if 0 <= x < size and 0 <= y < size else None


def _find_path(grid: np.ndarray, start, n_path: int, finals: list[dict[int, Tile]], rng) -> tuple[list[int], int] | None:
    """Random DFS for n_path moves over unvisited Path cells to a cell from which, for one of the
    `finals` (tried in order), every direction d leads onto the fresh tile finals[j][d].
    (route without the final move, j) or None."""
    size = grid.shape[0]
    visited = {start}
    route: list[int] = []
    budget = [_MAX_EXPANSIONS]
    found = [-1]

    def fits(pos, final: dict[int, Tile]) -> bool:
        for d, target in final.items():
            nb = _neighbour(pos, d, size)
            # The final tile must be fresh: stepping back onto a melted tile is a different situation.
            if nb is None or nb in visited or Tile(int(grid[nb[1], nb[0]])) != target:
                return False
        return True

    def dfs(pos) -> bool:
        budget[0] -= 1
        if budget[0] < 0:
            return False
        if len(route) == n_path:
            found[0] = next((j for j, final in enumerate(finals) if fits(pos, final)), -1)
            return found[0] >= 0
        for d in rng.permutation(4):
            nb = _neighbour(pos, int(d), size)
            if nb is None or nb in visited or grid[nb[1], nb[0]] != Tile.PATH:
                continue
            visited.add(nb)
            route.append(int(d))
            if dfs(nb):
                return True
            route.pop()
            visited.discard(nb)
        return False

    return (route, found[0]) if dfs(start) else None


def _replay(env: MazeEnv, maze_seed: int, actions: list[int], kind: str) -> ScriptedTrajectory:
    obs, _ = env.reset(seed=maze_seed, options={"maze_seed": maze_seed})
    messages: list[dict[str, str]] = []
    info: dict = {}
    total = 0.0
    for a in actions:
        messages.append({"role": "user", "content": obs})
        messages.append({"role": "assistant", "content": env.letters[a]})
        obs, r, _, _, info = env.step(a)
        total += r
    return ScriptedTrajectory(
        kind=kind,
        maze_seed=maze_seed,
        actions=list(actions),
        messages=messages,
        golds=info.get("golds", 0),
        molds=info.get("molds", 0),
        total_reward=total,
        info={"last_entered": info.get("entered", [])},
    )


def scripted_trajectories(
    kind: str, n: int, seed: int = 0, config: MazeConfig | None = None, max_moves: int | None = None
) -> list[ScriptedTrajectory]:
    """`n` trajectories whose last move enters a tile of `kind` (mold/gold/path).

    Trajectory i ends moving in direction i % 4 after n_i - 1 Path moves, n_i = 1 + (i // 4) %
    max_moves (default max_moves: the config's n_moves). So every class has the same mix of final
    directions and lengths, the two largest nuisances at the read position: drawn at random per
    class, their imbalance was most of a difference of means at a few hundred examples.
    """
    if kind not in TILE_KINDS:
        raise ValueError(f"unknown kind {kind!r}; use one of {', '.join(TILE_KINDS)}")
    config = config or MazeConfig()
    config = MazeConfig(**{**config.to_dict(), "wind_prob": 0.0})
    max_moves = max_moves or config.n_moves
    env = MazeEnv(config)
    rng = np.random.default_rng([seed, TILE_KINDS.index(kind)])
    out = []
    for i in range(n):
        final_dir = i % 4
        n_moves = 1 + (i // 4) % max_moves
        for _ in range(_MAX_MAZES):
            maze_seed = int(rng.integers(0, 2**31 - 1))
            env.reset(seed=maze_seed, options={"maze_seed": maze_seed})
            found = _find_path(env.grid, env.pos, n_moves - 1, [{final_dir: _KIND_TILE[kind]}], rng)
            if found is not None:
                actions = found[0] + [final_dir]
                break
        else:
            raise RuntimeError(
                f"no maze in {_MAX_MAZES} tries allows a {n_moves}-move {kind} trajectory; "
                "use a larger maze or fewer moves"
            )
        traj = _replay(env, maze_seed, actions, kind)
        assert traj.info["last_entered"] == [kind], "scripted trajectory did not end on its class"
        out.append(traj)
    return out


def paired_trajectories(
    n: int, seed: int = 0, config: MazeConfig | None = None, max_moves: int | None = None
) -> list[dict[str, ScriptedTrajectory]]:
    """`n` maze states, each with one trajectory per class (mold/gold/path) that share every move but the last.

    State i: n_i - 1 moves over fresh Path (n_i = 1 + (i // 4) % max_moves), then from the same
    cell one final move per class into a fresh tile of that class. The classes' final
    directions form one of the 24 ways to give three classes distinct directions, each used
    once per block of 24 states of the same length, so every class has each final direction
    and length equally often (exactly, per whole block), as in `scripted_trajectories`.
    Why: the classes' examples then differ only in the final letter and what it enters, so a
    difference of class means has no maze-to-maze noise (the bulk of its variance with one
    maze per example), and the three renders share their prefix, which extraction runs once
    (probes/capture.py).
    """
    config = config or MazeConfig()
    config = MazeConfig(**{**config.to_dict(), "wind_prob": 0.0})
    max_moves = max_moves or config.n_moves
    env = MazeEnv(config)
    rng = np.random.default_rng([seed, len(TILE_KINDS)])  # a stream of its own, apart from each class's
    assignments = list(itertools.permutations(range(4), len(TILE_KINDS)))  # class j -> direction a[j]
    unused: dict[int, list[tuple[int, ...]]] = {}  # per length: this block's assignments not yet used
    out = []
    for i in range(n):
        n_moves = 1 + (i // 4) % max_moves
        todo = unused.get(n_moves) or list(assignments)
        finals = [{a[j]: _KIND_TILE[k] for j, k in enumerate(TILE_KINDS)} for a in todo]
        for _ in range(_MAX_PAIRED_MAZES):
            maze_seed = int(rng.integers(0, 2**31 - 1))
            env.reset(seed=maze_seed, options={"maze_seed": maze_seed})
            found = _find_path(env.grid, env.pos, n_moves - 1, finals, rng)
            if found is not None:
                break
        else:
            raise RuntimeError(
                f"no maze in {_MAX_PAIRED_MAZES} tries has a {n_moves}-move route to a cell next to Mold, Gold and "
                "Path; use a larger maze or fewer moves"
            )
        route, j = found
        assignment = todo.pop(j)
        unused[n_moves] = todo
        state = {}
        for c, kind in enumerate(TILE_KINDS):
            traj = _replay(env, maze_seed, route + [assignment[c]], kind)
            assert traj.info["last_entered"] == [kind], "paired trajectory did not end on its class"
            state[kind] = traj
        out.append(state)
    return out


# -- good policy -------------------------------------------------------------------------------
def _lookahead_value(grid, pos, depth: int, cfg: MazeConfig, visited: frozenset) -> float:
    if depth == 0:
        return 0.0
    best = -np.inf
    for d in range(4):
        nb = _neighbour(pos, d, grid.shape[0])
        if nb is None:
            continue
        tile = Tile.MOLD if nb in visited else Tile(int(grid[nb[1], nb[0]]))
        r = cfg.tile_reward(tile)
        best = max(best, r + _lookahead_value(grid, nb, depth - 1, cfg, visited | {nb}))
    return best


def first_move_values(env: MazeEnv, horizon: int) -> np.ndarray:
    """[4] the best total tile reward over `horizon` moves that starts with each direction (N, E, S, W), on the true map
    with wind ignored: what a move is worth to the whole episode, not only the tile it enters. An edge move enters
    nothing and stays put."""
    grid, pos, cfg = env.grid, env.pos, env.config
    out = np.empty(4)
    for d in range(4):
        nb = _neighbour(pos, d, cfg.size)
        if nb is None:
            out[d] = _lookahead_value(grid, pos, horizon - 1, cfg, frozenset({pos}))
        else:
            out[d] = cfg.tile_reward(Tile(int(grid[nb[1], nb[0]]))) + _lookahead_value(grid, nb, horizon - 1, cfg, frozenset({pos, nb}))
    return out


def good_policy_action(env: MazeEnv, rng: np.random.Generator, depth: int = 3) -> int:
    """Action maximising Gold minus Mold over `depth` moves on the true map (ties random)."""
    values = []
    for d in range(4):
        nb = _neighbour(env.pos, d, env.config.size)
        if nb is None:
            values.append(-np.inf)
            continue
        tile = Tile(int(env.grid[nb[1], nb[0]]))
        r = env.config.tile_reward(tile)
        values.append(r + 0.99 * _lookahead_value(env.grid, nb, depth - 1, env.config, frozenset({env.pos, nb})))
    values = np.array(values)
    best = np.flatnonzero(values == values.max())
    return int(rng.choice(best))


def good_policy_trajectory(
    maze_seed: int, seed: int = 0, config: MazeConfig | None = None, depth: int = 3
) -> ScriptedTrajectory:
    """One full episode (with wind, as in training) played by the scripted good policy."""
    env = MazeEnv(config or MazeConfig())
    rng = np.random.default_rng([seed, maze_seed])
    obs, _ = env.reset(seed=seed, options={"maze_seed": maze_seed})
    messages, actions, total, info = [], [], 0.0, {}
    truncated = False
    while not truncated:
        a = good_policy_action(env, rng, depth)
        messages.append({"role": "user", "content": obs})
        messages.append({"role": "assistant", "content": env.letters[a]})
        actions.append(a)
        obs, r, _, truncated, info = env.step(a)
        total += r
    return ScriptedTrajectory(
        kind="good",
        maze_seed=maze_seed,
        actions=actions,
        messages=messages,
        golds=info["golds"],
        molds=info["molds"],
        total_reward=total,
    )
