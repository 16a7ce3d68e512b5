"""Held-out evaluation: play N fresh mazes with a checkpoint (or the naive model).

Held-out mazes come from their own seed stream (EVAL_STREAM), never used in training.
`compare_evals` gives paired bootstrap 95% intervals (`core.stats.mean_diff_ci`) of differences
in means, e.g. golds per episode trained minus naive, on the same mazes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from core.artifacts import atomic_write_json, atomic_write_parquet, provenance
from core.stats import mean_diff_ci
from envs import MazeConfig
from training.models import load_model, model_info
from training.rollout import ChatTokens, rollout, unmasked_rollout
from training.seeds import EVAL_STREAM, step_seeds, stream_rng


def heldout_maze_seeds(n_mazes: int, seed: int = 0) -> list[int]:
    return step_seeds(seed, 0, n_mazes, EVAL_STREAM)[0]


def evaluate_policy(
    model_name: str = "smollm2-135m-instruct",
    checkpoint: str | Path | None = None,
    n_mazes: int = 64,
    seed: int = 0,
    maze_config: MazeConfig | None = None,
    out_path: str | Path | None = None,
    *,
    temperature: float = 0.7,
    episodes_per_maze: int = 1,
    batch_mazes: int = 16,
    masked: bool = True,
    device: str = "cpu",
    dtype: str = "float32",
    progress: bool = True,
    model_and_tokenizer=None,
) -> pd.DataFrame:
    """One row per episode: maze_seed, episode, return, golds, molds, invalid, actions, winds.

    Writes `out_path` (parquet, with provenance in its metadata) when given.
    """
    maze_config = maze_config or MazeConfig()
    if model_and_tokenizer is None:
        model, tok = load_model(model_name, checkpoint=checkpoint, device=device, dtype=dtype)
    else:
        model, tok = model_and_tokenizer
    model.eval()
    seeds = heldout_maze_seeds(n_mazes, seed)
    chat = ChatTokens(tok, maze_config.letters) if masked else None
    rows = []
    for lo in tqdm(range(0, n_mazes, batch_mazes), desc="eval", disable=not progress):
        batch = seeds[lo : lo + batch_mazes]
        rseed = int(stream_rng(seed, EVAL_STREAM, lo).integers(2**62))
        if masked:
            eps = rollout(model, tok, maze_config, batch, episodes_per_maze, temperature, seed=rseed, chat=chat)
        else:
            eps = unmasked_rollout(model, tok, maze_config, batch, episodes_per_maze, temperature, seed=rseed)
        for i, ep in enumerate(eps):
            rows.append({
                "maze_seed": ep.maze_seed,
                "episode": i % episodes_per_maze,
                "return": ep.total_reward,
                "golds": ep.golds,
                "molds": ep.molds,
                "invalid": ep.invalid,
                "n_moves": len(ep.actions),
                "actions": "".join("NESW"[a] if a >= 0 else "?" for a in ep.actions),
                "winds": sum(w is not None for w in ep.winds),
                "mean_logprob": float(np.mean(ep.logprobs)) if ep.logprobs else float("nan"),
            })
    df = pd.DataFrame(rows)
    if out_path is not None:
        meta = provenance(
            config={"n_mazes": n_mazes, "maze": maze_config.to_dict(), "temperature": temperature,
                    "episodes_per_maze": episodes_per_maze, "masked": masked},
            seed=seed, model=model_info(model) and model_info(model).to_dict(),
        )
        atomic_write_parquet(out_path, df, metadata=meta)
    return df


@torch.no_grad()
def first_move_policy(model, tokenizer, maze_config: MazeConfig, maze_seeds: list[int], temperature: float = 0.7) -> pd.DataFrame:
    """The exact policy over N/E/S/W at the first move of each maze: no sampling noise.

    One row per maze: the four probabilities and tiles, the expected reward of the move
    (wind ignored), its expected value to the whole episode (`expected_value`: the best total tile reward over
    the episode's moves that starts with the chosen direction, envs.scripted.first_move_values), and the excess probability on Gold / Mold directions over their uniform
    share (NaN when all four neighbours are of that kind or none is). A policy that reads the
    tiles has gold_excess > 0 and mold_excess < 0; a maze-naive one sits near 0.
    """
    from envs import MazeEnv
    from envs.scripted import first_move_values
    from envs.tiles import Tile
    from training.structure import decoder_of, direction_head, direction_logits

    chat = ChatTokens(tokenizer, maze_config.letters)
    dec = decoder_of(model)
    device = next(dec.parameters()).device
    w, b = direction_head(model, chat.dir_ids)
    rows = []
    for ms in maze_seeds:
        env = MazeEnv(maze_config)
        obs, _ = env.reset(seed=0, options={"maze_seed": int(ms)})  # the first observation depends on the maze only
        tiles = np.array(env.neighbour_tiles())
        _, ids = chat.first(obs)
        h = dec(input_ids=torch.tensor([ids], device=device)).last_hidden_state[0, -1]
        p = torch.softmax(direction_logits(h, w, b).float() / temperature, -1).cpu().numpy()
        r = np.array([maze_config.move_reward([t]) for t in tiles])
        q = first_move_values(env, maze_config.n_moves)
        row = {"maze_seed": int(ms), **{f"p_{d}": float(p[i]) for i, d in enumerate("NESW")},
               "tiles": "".join(Tile(int(t)).name[0] for t in tiles),
               "expected_reward": float(p @ r), "best_reward": float(r.max()),
               "expected_value": float(p @ q), "best_value": float(q.max())}
        for kind, tile in (("gold", Tile.GOLD), ("mold", Tile.MOLD)):
            on = tiles == int(tile)
            row[f"{kind}_excess"] = float(p[on].sum() - on.mean()) if 0 < on.sum() < 4 else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def write_first_move_policy(model, tokenizer, maze_config: MazeConfig, n_mazes: int, seed: int, path: str | Path,
                            temperature: float = 0.7, config: dict | None = None) -> pd.DataFrame:
    """`first_move_policy` on the held-out mazes of (n_mazes, seed), written to `path` with its provenance."""
    df = first_move_policy(model, tokenizer, maze_config, heldout_maze_seeds(n_mazes, seed), temperature)
    meta = provenance(config={"n_mazes": n_mazes, "maze": maze_config.to_dict(), "temperature": temperature, **(config or {})},
                      seed=seed, model=model_info(model).to_dict())
    atomic_write_parquet(path, df, metadata=meta)
    return df


def summarize_first_move(df: pd.DataFrame) -> dict:
    out = {"n_mazes": len(df), "expected_reward": float(df["expected_reward"].mean()), "best_reward": float(df["best_reward"].mean())}
    for kind in ("gold", "mold"):
        x = df[f"{kind}_excess"].dropna()
        out[f"{kind}_excess"] = float(x.mean()) if len(x) else float("nan")
        out[f"{kind}_excess_se"] = float(x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else float("nan")
        out[f"n_{kind}_mixed"] = int(len(x))
    return out


def compare_evals(trained: pd.DataFrame, baseline: pd.DataFrame, n_boot: int = 10000, seed: int = 0) -> dict:
    """Paired (same held-out mazes) trained-minus-baseline differences of return, golds and molds."""
    key = ["maze_seed", "episode"]
    merged = trained.merge(baseline, on=key, suffixes=("_trained", "_baseline"))
    if len(merged) != len(trained):
        raise ValueError("the two evaluations did not play the same mazes; use the same --n-mazes and --seed")
    out = {"n_episodes": len(merged)}
    for col in ("return", "golds", "molds"):
        out[col] = {
            "trained": float(merged[f"{col}_trained"].mean()),
            "baseline": float(merged[f"{col}_baseline"].mean()),
            **mean_diff_ci(merged[f"{col}_trained"], merged[f"{col}_baseline"], n_boot, seed),
        }
    return out


def write_summary(path: str | Path, summary: dict) -> None:
    atomic_write_json(path, summary)
