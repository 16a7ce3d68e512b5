"""`welfare-axis train rl|sft|eval`: RL or SFT in the maze, and held-out evaluation.

    welfare-axis train rl --preset cpu-small --out runs/cpu-small-rl [--lr 1e-4 --n-moves 7 ...]
    welfare-axis train rl --out runs/cpu-small-rl --resume
    welfare-axis train sft --preset cpu-small --out runs/cpu-small-sft
    welfare-axis train eval --run runs/cpu-small-rl --n-mazes 64 --baseline runs/naive-eval.parquet

Every TrainConfig field has a flag (--lr, --group-size, --lora-top-layers, ...) that overrides
the preset; the full config is saved in the run folder's config.json.
Multi-GPU (data parallel, no code changes): `accelerate launch --num_processes 4 -m welfare_axis.cli
train rl --preset paper --device cuda --out runs/paper-rl` (or `torchrun --nproc_per_node 4 ...`).
Each process plays mazes_per_step / n_processes of the step's mazes (a group never spans processes),
gradients are summed across processes, and rank 0 writes the run folder. CPU / one device is the default.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from pathlib import Path

from envs import TILE_SETS
from envs.maze import PHRASINGS
from envs.tiles import PERMUTATIONS
from welfare_axis.options import (
    MAZE_HELP, NO_PROGRESS_HELP, UserError, add_download_arg, boolean, checkpoint_arg, device_arg, finite_float, maze_size, model_arg, out_dir, out_file, parquet_file, positive_float,
    positive_int, probability, seed_int,
)

_MAZE_FLAGS = {  # flag -> (MazeConfig field, type, choices)
    "--size": ("size", maze_size, None),
    "--n-moves": ("n_moves", positive_int, None),
    "--tile-set": ("tile_set", str, sorted(TILE_SETS)),
    "--permutation": ("permutation", str, PERMUTATIONS),
    "--phrasing": ("phrasing", str, PHRASINGS),
    "--wind": ("wind_prob", probability, None),
}


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    from training.config import TRAIN_PRESETS, TrainConfig

    from core.fields import field_docs

    p.add_argument("--preset", default=None, choices=list(TRAIN_PRESETS), help="base hyperparameters (default cpu-small)")
    g = p.add_argument_group("hyperparameters (override the preset)")
    hints = typing.get_type_hints(TrainConfig)
    docs = field_docs(TrainConfig)  # each field's attribute docstring is its help
    for f in dataclasses.fields(TrainConfig):
        if f.name == "maze":
            continue
        typ = hints[f.name]
        conv = boolean if typ is bool else finite_float if typ is float else typ if typ in (int, str) else str
        conv = {"model": model_arg, "device": device_arg}.get(f.name, conv)  # refused while parsing, like other commands
        g.add_argument(f"--{f.name.replace('_', '-')}", dest=f"cfg_{f.name}", type=conv, default=None,
                       metavar=typ.__name__.upper() if hasattr(typ, "__name__") else "X", help=docs[f.name])
    m = p.add_argument_group("maze (override the preset)")
    for flag, (name, typ, choices) in _MAZE_FLAGS.items():
        m.add_argument(flag, dest=f"maze_{name}", type=typ, choices=choices, default=None, help=MAZE_HELP[flag])


def _given_overrides(args: argparse.Namespace) -> tuple[dict, dict]:
    """The TrainConfig and MazeConfig fields set by flags on this command line."""
    overrides = {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg_") and v is not None}
    maze = {k[5:]: v for k, v in vars(args).items() if k.startswith("maze_") and v is not None}
    return overrides, maze


def config_from_args(args: argparse.Namespace):
    from training.config import config_from_preset

    overrides, maze = _given_overrides(args)
    return config_from_preset(args.preset or "cpu-small", **overrides, maze=maze)


def register(sub) -> None:
    p = sub.add_parser("train", help="RL or SFT training in the maze, and held-out evaluation")
    tsub = p.add_subparsers(dest="train_command", metavar="TRAIN_COMMAND")
    tsub.required = True

    for name, helptext in (("rl", "RL (Dr. GRPO by default) with checkpoints and --resume"), ("sft", "SFT on scripted good-policy trajectories")):
        q = tsub.add_parser(name, help=helptext, description=helptext)
        q.add_argument("--out", type=out_dir, required=True, help="run folder (config.json, metrics.parquet, checkpoints/)")
        q.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint (uses its saved config)")
        q.add_argument("--no-progress", action="store_true", help="hide the progress bar")
        q.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and exit")
        add_download_arg(q)
        _add_config_flags(q)
        q.set_defaults(func=run_train, kind=name)

    e = tsub.add_parser("eval", help="play held-out mazes with a checkpoint (or the naive model)")
    e.add_argument("--run", default=None, help="run folder: evaluate its final checkpoint with its model and maze config")
    e.add_argument("--model", type=model_arg, default=None, help="model name (default: the run's, else smollm2-135m-instruct)")
    e.add_argument("--checkpoint", "--adapter", dest="checkpoint", type=checkpoint_arg, default=None,
                   help="a checkpoint's model folder (a LoRA adapter of --model, or a full fine-tune's whole model); omit for the "
                        "naive model; --adapter is the older name of this flag")
    e.add_argument("--n-mazes", type=positive_int, default=64, help="held-out mazes to play (default 64)")
    e.add_argument("--seed", type=seed_int, default=0, help="held-out maze stream seed (same seed, same mazes)")
    e.add_argument("--temperature", type=positive_float, default=0.7, help="sampling temperature (default 0.7, the paper's, whatever the run trained at, so runs and the naive model compare)")
    e.add_argument("--batch-mazes", type=positive_int, default=16, help="mazes played in one batch")
    e.add_argument("--unmasked", action="store_true", help="free generation parsed by the env (for models without single-token directions)")
    e.add_argument("--out", type=out_file, required=True, help="per-episode results (.parquet); a .json summary is written next to it")
    e.add_argument("--baseline", type=parquet_file, default=None, help="another eval parquet on the same mazes: report paired bootstrap 95%% CIs of the difference")
    e.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)
    add_download_arg(e)
    m = e.add_argument_group("maze (default: the run's maze config)")
    for flag, (name, typ, choices) in _MAZE_FLAGS.items():
        m.add_argument(flag, dest=f"maze_{name}", type=typ, choices=choices, default=None, help=MAZE_HELP[flag])
    e.set_defaults(func=run_eval)


def run_train(args: argparse.Namespace) -> int:
    from training.checkpoint import TrainingDiverged

    if args.resume:
        overrides, maze = _given_overrides(args)
        maze_flag = {name: flag for flag, (name, _, _) in _MAZE_FLAGS.items()}
        given = ["--preset"] * (args.preset is not None) + ["--" + k.replace("_", "-") for k in overrides] + [maze_flag[k] for k in maze]
        if given:
            flags = ", ".join(given)
            raise UserError(f"--resume continues with the run's saved config.json, so {flags} would be ignored; drop them, or start a new run in another --out folder")
    if args.kind == "sft":
        overrides, _ = _given_overrides(args)
        for rl_field in ("finetune", "checkpoint_every"):
            if rl_field in overrides:
                flag = rl_field.replace("_", "-")
                raise UserError(f"--{flag} sets RL's {rl_field}; SFT has its own: use --sft-{flag}")
    if args.resume:  # the run's saved config; refuses a missing run, or one of the other kind, before any slow work
        from training.checkpoint import saved_run_config

        config = saved_run_config(args.out, args.kind)
    else:
        config = config_from_args(args)
    if args.print_config:
        print(json.dumps(config.to_dict(), indent=2, ensure_ascii=False))
        return 0
    try:
        if args.kind == "rl":
            from training.rl import train_rl

            path = train_rl(config, args.out, resume=args.resume, progress=not args.no_progress)
        else:
            from training.sft import train_sft

            path = train_sft(config, args.out, resume=args.resume, progress=not args.no_progress)
    except TrainingDiverged as e:
        raise UserError(str(e)) from None
    print(f"final checkpoint: {path}")
    return 0


def _check_same_maze(baseline: str, maze: dict, temperature: float, n_mazes: int, seed: int) -> None:
    """A paired comparison only means something on the same mazes, played the same way."""
    import pandas as pd

    from core.artifacts import read_parquet_metadata
    from training.evaluate import heldout_maze_seeds

    if not Path(baseline).exists():
        raise UserError(f"--baseline {baseline} does not exist; run `welfare-axis train eval` for the baseline first")
    cfg = read_parquet_metadata(baseline).get("config") or {}
    base_maze, base_t = cfg.get("maze"), cfg.get("temperature")
    if base_maze is not None and base_maze != maze:
        diff = ", ".join(f"{k} {base_maze.get(k)!r} vs {maze.get(k)!r}" for k in sorted(set(base_maze) | set(maze)) if base_maze.get(k) != maze.get(k))
        raise UserError(f"--baseline {baseline} was played on a different maze ({diff}); re-run it with the same maze flags (or --run)")
    if base_t is not None and base_t != temperature:
        raise UserError(f"--baseline {baseline} was sampled at temperature {base_t}, this eval at {temperature}; use the same --temperature")
    played = pd.read_parquet(baseline, columns=["maze_seed", "episode"])
    missing = set(heldout_maze_seeds(n_mazes, seed)) - set(played.loc[played["episode"] == 0, "maze_seed"])
    if missing:
        raise UserError(f"--baseline {baseline} did not play {len(missing)} of this eval's {n_mazes} held-out mazes; "
                        "use the same --n-mazes and --seed (or fewer mazes)")


def _first_move_path(out: str | Path) -> Path:
    return Path(out).with_name(Path(out).stem + "_first_move.parquet")


def run_eval(args: argparse.Namespace) -> int:
    from core.artifacts import atomic_folder
    from envs import MazeConfig
    from training.checkpoint import final_checkpoint
    from training.models import load_model

    if args.n_mazes < 1:
        raise UserError(f"--n-mazes must be at least 1, got {args.n_mazes}")
    model, checkpoint, maze, temperature = args.model, args.checkpoint, {}, args.temperature
    if args.run:
        saved = json.loads((Path(args.run) / "config.json").read_text())["config"]
        model = model or saved["model"]
        checkpoint = checkpoint or str(final_checkpoint(args.run))
        maze = dict(saved["maze"])
    model = model or "smollm2-135m-instruct"
    maze.update({k[5:]: v for k, v in vars(args).items() if k.startswith("maze_") and v is not None})
    maze_config = MazeConfig(**maze)
    if args.baseline:  # before the (slow) eval, so a mismatch fails at once
        _check_same_maze(args.baseline, maze_config.to_dict(), temperature, args.n_mazes, args.seed)
    loaded = load_model(model, checkpoint=checkpoint)
    out = Path(args.out)
    with atomic_folder(out.parent) as tmp:  # the episodes, first-move table and summary appear together or not at all
        summary = _eval_outputs(args, model, checkpoint, maze, maze_config, temperature, loaded, tmp / out.name)
    print(json.dumps(summary, indent=2, ensure_ascii=False))
    return 0


def _eval_outputs(args, model, checkpoint, maze: dict, maze_config, temperature: float, loaded, out: Path) -> dict:
    from core.stats import mean_diff_ci
    from training.evaluate import compare_evals, evaluate_policy, summarize_first_move, write_first_move_policy, write_summary

    df = evaluate_policy(
        model, checkpoint, args.n_mazes, args.seed, maze_config, out,
        temperature=temperature, batch_mazes=args.batch_mazes,
        masked=not args.unmasked, progress=not args.no_progress, model_and_tokenizer=loaded,
    )
    summary = {
        "model": model, "adapter": checkpoint, "n_mazes": args.n_mazes, "seed": args.seed, "maze": maze,
        "temperature": temperature,
        "return": float(df["return"].mean()), "golds_per_episode": float(df["golds"].mean()),
        "molds_per_episode": float(df["molds"].mean()),
    }
    first = None
    if not args.unmasked:  # the exact policy needs single-token directions
        first = write_first_move_policy(*loaded, maze_config, args.n_mazes, args.seed, _first_move_path(out),
                                        temperature, config={"adapter": checkpoint})  # "adapter": the key eval summaries have always had
        summary["first_move"] = summarize_first_move(first)
    if args.baseline:
        import pandas as pd

        summary["vs_baseline"] = {"baseline": args.baseline, **compare_evals(df, pd.read_parquet(args.baseline))}
        base_first = _first_move_path(args.baseline)
        if first is not None and base_first.exists():
            b = pd.read_parquet(base_first)
            if list(b["maze_seed"]) == list(first["maze_seed"]):
                summary["vs_baseline"]["first_move_expected_reward"] = mean_diff_ci(first["expected_reward"], b["expected_reward"], n_boot=10000)
    write_summary(out.with_suffix(".json"), summary)
    return summary
