"""`welfare-axis mechanics drift|onestep|anatomy|recruitment|matched`: how RL changed the model (mechanics/).

Each subcommand writes <name>.json (summary, the hypotheses it measures with their verdicts, and
provenance) and <name>.parquet (the per-example, per-step or per-matrix table) into --out.
Models are always loaded in float32: drift between nearby models and one-step updates are
below bfloat16's resolution.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from welfare_axis.options import (
    BATCH_HELP, NO_PROGRESS_HELP, SEED_HELP, UserError, add_maze_args, add_model_args, checkpoint_arg, maze_config_from_args,
    nonnegative_int,
)

SUBCOMMANDS = ("drift", "onestep", "anatomy", "recruitment", "matched")


def register(sub) -> None:
    p = sub.add_parser(
        "mechanics",
        help="mechanics of the update: drift KL, one-step RL vs SFT probe with gating, update anatomy, recruitment",
        description="Measurements (hypotheses H1-H4, thresholds in mechanics/hypotheses.py). --model/--checkpoint is the "
        "trained model, --model/--start-checkpoint the one it started from (default: the plain --model).",
    )
    msub = p.add_subparsers(dest="mechanics", metavar="MEASUREMENT")
    msub.required = True

    d = msub.add_parser("drift", help="KL(start || trained) on held-out maze states and four off-target prompt sets; off/on ratio")
    _common(d)
    _example_args(d)

    o = msub.add_parser("onestep", help="one RL and one SFT step from --model/--checkpoint, matched on-target change; off-target KL and MLP gating")
    _common(o, start=False)
    _example_args(o)
    o.add_argument("--n-batches", type=int, default=4, help="probe batches (the CI's units; default 4)")
    o.add_argument("--mazes", type=int, default=2, help="mazes per batch (default 2)")
    o.add_argument("--group", type=int, default=4, help="episodes per maze, the GRPO group (default 4)")
    o.add_argument("--delta", type=float, default=0.02, help="on-target rise of the matched log-probability, nats (default 0.02)")
    o.add_argument("--match", choices=("own", "scripted"), default="own",
                   help="own: each step's own target (SFT: scripted moves; RL: its advantage-weighted moves); "
                        "scripted: both on the scripted moves (RL may not rise; default own)")
    o.add_argument("--refine", type=int, default=2, help="secant corrections of the first-order step (default 2)")
    o.add_argument("--temperature", type=float, default=0.7, help="sampling and RL-loss temperature (default 0.7, training's)")
    o.add_argument("--micro-batch", type=int, default=8, help="episodes per backward pass (memory vs speed; default 8)")

    a = msub.add_parser("anatomy", help="per weight matrix: relative change, sparsity, effective rank, top singular subspace rotation")
    _common(a)
    a.add_argument("--top-k", type=int, default=8, help="singular subspace size for the rotation angles (default 8)")

    r = msub.add_parser("recruitment", help="cos(v_k, u_k) per layer and linear CKA of start vs trained representations on maze inputs")
    _common(r)
    r.add_argument("--vectors", required=True, help="concept-vector folder of the trained model (welfare-axis extract)")
    r.add_argument("--control", required=True, help="concept-vector folder of the start (maze-naive) model")
    r.add_argument("--n-maze", type=int, default=32, help="held-out maze episodes for CKA (0: skip CKA; default 32)")
    r.add_argument("--moves", type=int, default=3, help="moves per maze episode (default 3)")
    r.add_argument("--batch-size", type=int, default=8, help=BATCH_HELP + " (default 8)")
    from training.config import TRAIN_PRESETS

    m = msub.add_parser("matched", help="continue --model with RL and with SFT (same steps, decisions, LoRA, optimizer); "
                        "off-target drift against on-target progress at every checkpoint; writes matched.png")
    _common(m, start=False)
    m.add_argument("--preset", default="cpu-small", choices=list(TRAIN_PRESETS),
                   help="training hyperparameters both arms share (default cpu-small; its maze too)")
    m.add_argument("--steps", type=int, default=6, help="training steps of each arm (default 6)")
    m.add_argument("--every", type=int, default=1, help="steps between checkpoints, each one read (default 1)")
    m.add_argument("--eval-mazes", type=int, default=64, help="held-out mazes for the first-move progress (default 64)")
    m.add_argument("--n-maze", type=int, default=16, help="held-out maze episodes for the on-target KL (default 16)")
    m.add_argument("--n-per-set", type=int, default=16, help="prompts per off-target set (default 16)")
    m.add_argument("--batch-size", type=int, default=8, help=BATCH_HELP + " (default 8)")
    m.add_argument("--extract", type=nonnegative_int, default=0, metavar="N",
                   help="also extract concept vectors of every checkpoint from N trajectories per class: RL's change of the "
                        "antiparallelism and of the welfare axis minus SFT's at matched progress, and each arm's axis change "
                        "against the start's u_* and valence direction (default 0: off)")
    for sp in (d, o, a, r, m):
        sp.set_defaults(func=run_mechanics)


def _common(p: argparse.ArgumentParser, start: bool = True) -> None:
    add_model_args(p)
    if start:
        p.add_argument("--start-checkpoint", "--start-adapter", dest="start_checkpoint", type=checkpoint_arg, default=None,
                       help="checkpoint model folder of the start model, as --checkpoint (default: none, the plain --model); "
                            "--start-adapter is the older name")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0, help=SEED_HELP)
    p.add_argument("--n-boot", type=int, default=2000, help="bootstrap draws for the CIs (default 2000)")
    p.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)


def _example_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n-maze", type=int, default=32, help="held-out maze episodes read on target (default 32)")
    p.add_argument("--moves", type=int, default=3, help="moves per maze episode (default 3: every move is read)")
    p.add_argument("--n-per-set", type=int, default=32, help="prompts per off-target set (default 32)")
    p.add_argument("--batch-size", type=int, default=8, help=BATCH_HELP + " (default 8)")
    add_maze_args(p)


def _check(args: argparse.Namespace) -> None:
    """Input errors before any model is loaded."""
    if getattr(args, "dtype", "float32") != "float32":
        raise UserError(f"mechanics works in float32 (tiny drifts and one-step updates vanish in {args.dtype}); drop --dtype")
    for flag in ("n_boot", "n_batches", "mazes", "group", "moves", "n_per_set", "batch_size", "micro_batch", "top_k", "steps", "every"):
        if getattr(args, flag, 1) < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}")
    least = 0 if args.mechanics == "recruitment" else 2
    if hasattr(args, "n_maze") and args.n_maze < least:
        raise UserError(f"--n-maze must be at least {least}, got {args.n_maze}")
    if args.mechanics == "matched":
        if args.eval_mazes < 2:
            raise UserError(f"--eval-mazes must be at least 2, got {args.eval_mazes}")
        if args.checkpoint and not (Path(args.checkpoint) / "config.json").exists():
            raise UserError(f"--checkpoint {args.checkpoint} is not a whole model folder (a LoRA adapter?); both arms train from "
                            "a whole model: pass a full fine-tune's checkpoint or a model folder as --model")
    if args.mechanics == "onestep":
        if args.group < 2:
            raise UserError(f"--group must be at least 2 (advantages are relative to the group mean), got {args.group}")
        if not args.delta > 0:
            raise UserError(f"--delta must be positive, got {args.delta}")
        if args.refine < 0 or not args.temperature > 0:
            raise UserError("--refine must be >= 0 and --temperature > 0")
    for flag in ("vectors", "control"):
        folder = getattr(args, flag, None)
        if folder is not None and not (Path(folder) / "vectors.safetensors").exists():
            raise UserError(f"--{flag} {folder} holds no vectors.safetensors; run 'welfare-axis extract --out {folder}' first")


def _load(args: argparse.Namespace, checkpoint):
    from training.models import load_model

    return load_model(args.model, device=args.device, dtype="float32", checkpoint=checkpoint)


def _sets(args, tok) -> dict:
    from mechanics.examples import example_sets

    return example_sets(tok, args.n_maze, args.n_per_set, args.seed, maze_config_from_args(args), args.moves)


def run_mechanics(args: argparse.Namespace) -> int:
    _check(args)
    summary, tables, models = _RUNNERS[args.mechanics](args)
    from core.artifacts import atomic_write_json, atomic_write_parquet, provenance
    from mechanics.hypotheses import evaluate

    # matched also reads H3, H4 and H4b on the RL arm's own update
    summaries = {args.mechanics: summary, **(summary.get("rl_update") or {})}
    measured = [h.to_dict() for h in evaluate(summaries) if h.verdict != "not measured"]
    config = {k: v for k, v in vars(args).items() if k != "func"}
    record = {"measurement": args.mechanics, "summary": summary, "hypotheses": measured,
              "provenance": provenance(config=config, seed=args.seed, model=models)}
    out = Path(args.out)
    for name, frame in tables.items():
        atomic_write_parquet(out / f"{name}.parquet", frame, metadata={"measurement": args.mechanics, "config": config})
    if args.mechanics == "matched":
        from mechanics.matched import plot

        plot(summary, out / "matched.png")
    atomic_write_json(out / f"{args.mechanics}.json", record)
    print(json.dumps({h["id"]: h["verdict"] for h in measured} or {"measurement": args.mechanics}))
    print(f"wrote {args.mechanics}.json and {', '.join(f'{n}.parquet' for n in tables)} to {out}")
    return 0


def _infos(*models) -> dict:
    from training.models import model_info

    return {name: model_info(m).to_dict() for name, m in zip(("start", "trained"), models)}


def _drift(args):
    from mechanics.drift import drift

    start, tok = _load(args, args.start_checkpoint)
    trained, _ = _load(args, args.checkpoint)
    table, summary = drift(start, trained, tok, _sets(args, tok), args.batch_size, args.n_boot, args.seed)
    return summary, {"drift": table}, _infos(start, trained)


def _onestep(args):
    from mechanics.onestep import one_step_probe, probe_summary
    from training.models import model_info

    model, tok = _load(args, args.checkpoint)
    steps, gates = one_step_probe(model, tok, _sets(args, tok), maze_config_from_args(args), args.n_batches, args.mazes, args.group,
                                  args.moves, args.temperature, args.delta, args.refine, args.seed, args.micro_batch, args.batch_size,
                                  progress=not args.no_progress, match=args.match)
    summary = {"delta": args.delta, "match": args.match, **probe_summary(steps, gates, args.n_boot, args.seed)}
    return summary, {"onestep": steps, "onestep_gating": gates}, {"model": model_info(model).to_dict()}


def _anatomy(args):
    from mechanics.anatomy import anatomy_summary, matrix_table, state_dict_float32

    start, _ = _load(args, args.start_checkpoint)
    trained, _ = _load(args, args.checkpoint)
    table = matrix_table(state_dict_float32(start), state_dict_float32(trained), args.top_k)
    lora = any(a is not None and (Path(a) / "adapter_config.json").exists() for a in (args.checkpoint, args.start_checkpoint))
    return anatomy_summary(table, low_rank_by_construction=lora), {"anatomy": table}, _infos(start, trained)


def _recruitment(args):
    from mechanics.examples import maze_examples
    from mechanics.recruitment import action_activations, cka_per_layer, recruitment_summary, vector_cosines
    from probes.vectors import ConceptVectors
    from training.models import pad_token_id

    v, u = ConceptVectors.load(args.vectors), ConceptVectors.load(args.control)
    cos = vector_cosines({k: v.get(k).numpy() for k in v.names}, {k: u.get(k).numpy() for k in u.names})
    cka, infos = None, {}
    if args.n_maze:
        start, tok = _load(args, args.start_checkpoint)
        trained, _ = _load(args, args.checkpoint)
        v.check_model(trained)
        layers = list(range(trained.config.num_hidden_layers))
        ex = maze_examples(tok, args.n_maze, args.seed, None, args.moves)
        acts = [action_activations(m, ex, layers, args.batch_size, pad_token_id(tok)) for m in (start, trained)]
        cka, infos = cka_per_layer(acts[0], acts[1], layers), _infos(start, trained)
    tables = {"recruitment_cos": cos, **({"recruitment_cka": cka} if cka is not None else {})}
    return recruitment_summary(cos, cka, args.n_boot, args.seed), tables, infos or {"vectors": args.vectors, "control": args.control}


def _matched(args):
    from mechanics.matched import run_matched
    from training.config import config_from_preset

    base = config_from_preset(args.preset, seed=args.seed, device=args.device, n_steps=args.steps, checkpoint_every=args.every)
    start = args.checkpoint or args.model
    summary, tables = run_matched(base, start, Path(args.out), args.eval_mazes, args.n_maze, args.n_per_set, args.batch_size,
                                  args.n_boot, progress=not args.no_progress, extract_n=args.extract)
    return summary, tables, {"start": start, "base_config": base.to_dict()}


_RUNNERS = {"drift": _drift, "onestep": _onestep, "anatomy": _anatomy, "recruitment": _recruitment, "matched": _matched}
