"""`welfare-axis env play|sample`: play a maze in the terminal, print scripted transcripts."""

from __future__ import annotations

import argparse
import json
import sys

from envs import TILE_KINDS, MazeEnv, TextActions, scripted_trajectories
from envs.generator import DIRECTIONS
from envs.parse import CARDINAL_WORDS, RELATIVE_WORDS
from envs.scripted import good_policy_trajectory
from welfare_axis.options import add_maze_args, maze_config_from_args, positive_int, seed_int


def register(sub) -> None:
    p = sub.add_parser("env", help="play the maze or print scripted trajectories")
    env_sub = p.add_subparsers(dest="env_command", metavar="ENV_COMMAND")
    env_sub.required = True

    play = env_sub.add_parser("play", help="play one maze episode in the terminal")
    play.add_argument("--seed", type=seed_int, default=0, help="episode seed (same seed, same maze)")
    add_maze_args(play)
    play.set_defaults(func=run_play)

    sample = env_sub.add_parser("sample", help="print scripted trajectories as chat transcripts")
    sample.add_argument("--kind", default="gold", choices=[*TILE_KINDS, "good"], help="final tile class, or 'good' for the scripted good policy")
    sample.add_argument("-n", type=positive_int, default=3, help="number of trajectories (default 3)")
    sample.add_argument("--seed", type=seed_int, default=0, help="trajectory seed (same seed, same trajectories)")
    sample.add_argument("--json", action="store_true", help="print JSON lines instead of transcripts")
    add_maze_args(sample)
    sample.set_defaults(func=run_sample)


def move_note(info: dict, before: tuple[int, int], maze: MazeEnv) -> str:
    """One move in words: the move (or the invalid reply), where the wind took the player, what was entered."""
    letters, size = maze.letters, maze.config.size
    entered = f"entered {', '.join(info['entered']) or 'nothing'}"
    if info["invalid"]:
        after_move = before
        head = "invalid move"
    else:
        dx, dy = DIRECTIONS[letters.index(info["action"])]
        x, y = before[0] + dx, before[1] + dy
        after_move = (x, y) if 0 <= x < size and 0 <= y < size else before
        head = info["action"]
    if not info["wind"]:
        return f"{head} (you stay put)" if info["invalid"] else f"{head}: {entered}"
    words = CARDINAL_WORDS if maze.config.phrasing == "cardinal" else RELATIVE_WORDS
    wind = words[letters.index(info["wind_direction"])]
    if info["position"] == after_move:  # the edge of the grid stopped the gust
        against = f"the wind blew {wind} against the edge"
        return f"{head} (you stay put; {against})" if info["invalid"] else f"{head}, and {against}: {entered}"
    joint = ", but" if info["invalid"] else ", then"
    return f"{head}{joint} the wind blew you {wind} to {info['position']}: {entered}"


def run_play(args: argparse.Namespace) -> int:
    maze = MazeEnv(maze_config_from_args(args), render_mode="ansi")
    env = TextActions(maze)  # typed replies are parsed like a model's
    obs, _ = env.reset(seed=args.seed)
    print(f"Maze seed {maze.maze_seed}. Type {'/'.join(env.letters)} (or a word like 'north'); q quits.\n")
    done = False
    while not done:
        print(env.render())
        print(f"\n{obs}")
        try:
            reply = input("> ").strip()
        except EOFError:
            print()
            return 0
        if reply.lower() in ("q", "quit", "exit"):
            return 0
        before = maze.pos
        obs, reward, _, done, info = env.step(reply)
        print(f"\n{move_note(info, before, maze)}; reward {reward:+.1f}\n")
    print(env.render())
    print(f"\nEpisode over: golds {maze.golds}, molds {maze.molds}, return {maze.total_reward:+.1f}")
    return 0


def run_sample(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise ValueError(f"-n must be at least 1, got {args.n}")
    config = maze_config_from_args(args)
    if args.kind == "good":
        trajs = [good_policy_trajectory(maze_seed=args.seed + i, seed=args.seed, config=config) for i in range(args.n)]
    else:
        trajs = scripted_trajectories(args.kind, args.n, seed=args.seed, config=config)
    for i, t in enumerate(trajs):
        if args.json:
            print(json.dumps({"kind": t.kind, "maze_seed": t.maze_seed, "actions": t.actions, "messages": t.messages}, ensure_ascii=False))
            continue
        print(f"=== trajectory {i} ({t.kind}, maze seed {t.maze_seed}, {t.n_moves} moves, golds {t.golds}, molds {t.molds}) ===")
        for m in t.messages:
            print(f"[{m['role']}] {m['content']}")
        print()
    sys.stdout.flush()
    return 0
