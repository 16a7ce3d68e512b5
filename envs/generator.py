"""The 2-D maze generator of the study (docs/study.md, "Maze").

Grid indexed grid[y, x]; north is y - 1. Outer ring is Mold; the interior starts
all Mold and a random walk carves Path; Mold is then thinned to under half the
interior; Gold is scattered on Path; the start is the Path cell nearest the centre.
"""

from __future__ import annotations

import numpy as np

from envs.tiles import Tile

# (dx, dy) for N, E, S, W: action index order everywhere in the package.
DIRECTIONS: tuple[tuple[int, int], ...] = ((0, -1), (1, 0), (0, 1), (-1, 0))

MAX_MOLD_FRACTION = 0.5
MIN_MOLD_FRACTION = 0.10
GOLD_FRACTION_OF_MOLD = 0.20


def generate_grid(size: int, rng: np.random.Generator) -> tuple[np.ndarray, tuple[int, int]]:
    """Return (grid of Tile values as int8, start (x, y))."""
    if size < 5:
        raise ValueError(f"maze size must be at least 5, got {size}")
    inner = size - 2
    grid = np.full((size, size), int(Tile.MOLD), dtype=np.int8)

    # Random walk over the interior; a step that would leave the interior is skipped.
    walk_len = int(rng.integers(5 * inner, 15 * inner + 1))
    x, y = (int(v) for v in rng.integers(1, size - 1, size=2))
    grid[y, x] = Tile.PATH
    steps = rng.integers(0, 4, size=walk_len)
    for s in steps:
        dx, dy = DIRECTIONS[s]
        nx, ny = x + dx, y + dy
        if 1 <= nx <= size - 2 and 1 <= ny <= size - 2:
            x, y = nx, ny
            grid[y, x] = Tile.PATH

    # Bring the interior Mold fraction into [10%, 50%) with the fewest flips.
    interior = grid[1:-1, 1:-1]  # a view: writes go to grid
    n_int = interior.size
    mold_cells = np.flatnonzero(interior == Tile.MOLD)
    max_mold = int(np.ceil(MAX_MOLD_FRACTION * n_int)) - 1
    min_mold = int(np.ceil(MIN_MOLD_FRACTION * n_int))
    if len(mold_cells) > max_mold:
        flip = rng.choice(mold_cells, size=len(mold_cells) - max_mold, replace=False)
        interior.flat[flip] = Tile.PATH
    elif len(mold_cells) < min_mold:
        path_cells = np.flatnonzero(interior == Tile.PATH)
        flip = rng.choice(path_cells, size=min_mold - len(mold_cells), replace=False)
        interior.flat[flip] = Tile.MOLD

    # Gold on random interior Path cells, always leaving one Path cell for the start.
    n_mold = int((interior == Tile.MOLD).sum())
    path_cells = np.flatnonzero(interior == Tile.PATH)
    n_gold = min(max(1, int(np.floor(GOLD_FRACTION_OF_MOLD * n_mold))), len(path_cells) - 1)
    if n_gold > 0:
        interior.flat[rng.choice(path_cells, size=n_gold, replace=False)] = Tile.GOLD

    return grid, nearest_path_to_centre(grid)


def nearest_path_to_centre(grid: np.ndarray) -> tuple[int, int]:
    """Path cell with the fewest grid steps (BFS distance on the open grid, i.e. Manhattan)
    from the centre; ties broken by row, then column."""
    size = grid.shape[0]
    c = size // 2
    ys, xs = np.nonzero(grid == Tile.PATH)
    if len(ys) == 0:
        raise ValueError("maze has no Path cell for the start")
    dist = np.abs(ys - c) + np.abs(xs - c)
    order = np.lexsort((xs, ys, dist))
    return int(xs[order[0]]), int(ys[order[0]])
