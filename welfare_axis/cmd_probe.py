"""`welfare-axis extract` and `welfare-axis analyze`: concept vectors and their analyses."""

from __future__ import annotations

import argparse
import json

from welfare_axis.options import (
    BATCH_HELP, NO_PROGRESS_HELP, SEED_HELP, add_download_arg, add_maze_args, add_model_args, device_arg, maze_config_from_args, nonnegative_int, out_dir, positive_int,
    seed_int,
)


def register(sub) -> None:
    p = sub.add_parser(
        "extract",
        help="extract concept vectors v_mold/v_gold/v_path (u_* on the naive model) for all layers",
        description="Render scripted Mold/Gold/Path trajectories, read the residual stream at the final direction "
        "letter at every layer (block inputs, 0-based), and write vectors.safetensors, class_means.safetensors, "
        "meta.json, examples.parquet and activations.npy (float16, for analyze) to --out.",
    )
    add_model_args(p)
    p.add_argument("-n", type=positive_int, default=300, help="trajectories per class, or maze states with --design paired (default 300; the paper used 5000)")
    p.add_argument("--design", choices=("independent", "paired"), default="independent",
                   help="independent: one maze per example (the paper's); paired: per maze state one example per class, "
                   "differing only in the final letter (less noise, a third of the cost per example)")
    p.add_argument("--seed", type=seed_int, default=0, help=SEED_HELP)
    p.add_argument("--batch-size", type=positive_int, default=16, help=BATCH_HELP + " (default 16)")
    p.add_argument("--max-moves", type=positive_int, default=None, help="trajectory length n in 1..MAX (default: 15, as in the paper)")
    p.add_argument("--out", type=out_dir, required=True, help="output folder")
    p.add_argument("--gguf-layer", type=nonnegative_int, default=None, help="also export each vector at this layer as a llama.cpp control vector")
    p.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)
    add_maze_args(p)
    p.set_defaults(func=run_extract)

    a = sub.add_parser(
        "analyze",
        help="layer choice, antiparallelism, logit lens, emotion alignment and tracking of concept vectors",
        description="Analyse a folder written by 'extract' (and optionally the naive model's control folder); "
        "writes summary.json, layer_choice.json, parquet tables and PNG figures to --out.",
    )
    a.add_argument("--vectors", required=True, help="folder written by 'welfare-axis extract' (trained model)")
    a.add_argument("--control", default=None, help="folder of the maze-naive model's vectors u_*")
    a.add_argument("--out", type=out_dir, required=True, help="output folder")
    a.add_argument("--seed", type=seed_int, default=0, help=SEED_HELP)
    a.add_argument("--device", type=device_arg, default="cpu", help="cpu (default), cuda, cuda:N or mps")
    a.add_argument("--batch-size", type=positive_int, default=16, help=BATCH_HELP + " (default 16)")
    a.add_argument("--no-probe", action="store_true", help="skip the logistic-regression probes")
    a.add_argument("--emotion-layer", type=nonnegative_int, default=None, help="default floor(2L/3)")
    a.add_argument("--logit-layer", type=nonnegative_int, default=None, help="default floor(5L/6)")
    a.add_argument("--top-k", type=positive_int, default=20, help="tokens listed per vector and layer in the logit-lens tables (default 20)")
    a.add_argument("--stories", default=None, help="emotion stories JSON (default: the shipped set)")
    a.add_argument("--neutral", default=None, help="neutral texts JSON (default: the shipped set)")
    a.add_argument("--generate-stories", action="store_true", help="have the model under study write the stories")
    a.add_argument("--n-generated", type=positive_int, default=8, help="stories per emotion with --generate-stories")
    a.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)
    add_download_arg(a)
    a.set_defaults(func=run_analyze)


def run_extract(args: argparse.Namespace) -> int:
    from probes.extract import extract_vectors
    from training.models import load_model

    if args.n < 2:
        raise ValueError(f"-n must be at least 2, got {args.n}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    config = maze_config_from_args(args)
    if args.max_moves is not None and not 1 <= args.max_moves <= config.n_moves:
        raise ValueError(f"--max-moves must be in 1..{config.n_moves}, got {args.max_moves}")
    model, tok = load_model(args.model, device=args.device, dtype=args.dtype, checkpoint=args.checkpoint)
    if args.gguf_layer is not None and not 2 <= args.gguf_layer < model.config.num_hidden_layers:
        raise ValueError(f"--gguf-layer must be in 2..{model.config.num_hidden_layers - 1} for this model "
                         f"(llama.cpp control vectors cannot steer layers 0 and 1), got {args.gguf_layer}")
    cv = extract_vectors(
        model, tok, args.n, seed=args.seed, maze_config=config, batch_size=args.batch_size,
        progress=not args.no_progress, max_moves=args.max_moves, out_dir=args.out, design=args.design, gguf_layer=args.gguf_layer,
    )
    print(f"wrote {', '.join(cv.names)} ({cv.n_layers} layers x {cv.hidden_size}) to {args.out} in {cv.meta['seconds']:.0f} s")
    return 0


def run_analyze(args: argparse.Namespace) -> int:
    from probes.analyze import run_analyses

    s = run_analyses(
        args.vectors, args.out, control_dir=args.control, seed=args.seed, device=args.device,
        batch_size=args.batch_size, probe=not args.no_probe, emotion_layer=args.emotion_layer, logit_layer=args.logit_layer,
        top_k=args.top_k, stories=args.stories, neutral=args.neutral, generate_stories=args.generate_stories,
        n_generated=args.n_generated, progress=not args.no_progress,
    )
    from welfare_axis.claims import evaluate

    brief = {"l_star": s["l_star"], "verdict_space": s["verdict_space"],
             "claims": {r.id: r.verdict for r in evaluate(s, None) if r.id <= 4}}
    print(json.dumps(brief))
    print(f"wrote summary.json, tables and figures to {args.out}")
    return 0
