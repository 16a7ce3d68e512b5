"""`welfare-axis steer` (steered vs unsteered replies side by side) and `welfare-axis steer-eval NAME` (steering evals)."""

from __future__ import annotations

import argparse
import itertools
import re
import sys
import textwrap
from pathlib import Path

from welfare_axis.options import (
    BATCH_HELP, UserError, add_maze_args, add_model_args, alpha_grid, maze_config_from_args, model_arg, nonnegative_float, nonnegative_int,
    out_dir, positive_float, positive_int, seed_int,
)
from steering.catalog import DEFAULT_ALPHAS, EVAL_NAMES

# The default sentiment eval's size: alphas {-4,-2,0,2,4} x 5 vectors x 40 prompts, alpha 0 shared,
# = 21 x 40 = 840 generations per sample; 2 samples of <= 40 new tokens keep it to minutes on
# 2 CPU cores (benchmarks/steer.py measures the throughput).
SENTIMENT_K = 2
SENTIMENT_TOKENS = 40
_NEG = re.compile(r"^-\d[\d.:,\-]*$")  # lets "--alpha -4:4:2" parse as a value, not an option


def _add_vector_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("vectors")
    g.add_argument("--vectors", required=True, help="concept-vector folder (vectors.safetensors) of the trained model, or a .pt/.safetensors tensor file")
    g.add_argument("--control", default=None, help="concept-vector folder of the maze-naive model (u_* controls, norm-matched to v_*)")
    layer = g.add_mutually_exclusive_group()
    layer.add_argument("--layer", type=nonnegative_int, default=None, help="steering layer (input of block l, 0-based; 0 = embeddings)")
    layer.add_argument("--analysis", default=None, help="probe analysis folder holding layer_choice.json (per-concept layers)")
    g.add_argument("--seed", type=seed_int, default=0, help="sampling seed (same seed, same replies; default 0)")


def register(sub) -> None:
    p = sub.add_parser("steer", help="print steered and unsteered replies side by side")
    p._negative_number_matcher = _NEG
    add_model_args(p)
    _add_vector_args(p)
    p.add_argument("--vector", default="mold", help="mold/gold/path (trained v_*), u_mold... (needs --control), random_mold...; default mold")
    p.add_argument("--alpha", type=alpha_grid, default="4", help="a number, a list (-4,4) or a sweep start:stop:step (-4:4:2); default 4")
    p.add_argument("--max-new-tokens", type=positive_int, default=60, help="reply length in tokens (default 60)")
    p.add_argument("--temperature", type=nonnegative_float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--width", type=nonnegative_int, default=0, help="total print width (default: terminal width)")
    p.add_argument("prompts", nargs="+", metavar="PROMPT", help="user message(s)")
    p.set_defaults(func=run_steer)

    e = sub.add_parser(
        "steer-eval",
        help="steering evals: sentiment, backtracking, confidence, refusal",
        description="Sweep alpha over v_* (trained), u_* (naive, norm-matched) and a random direction; write "
        "<name>_samples.parquet, <name>_summary.json/.csv and <name>.png to --out. "
        f"Sentiment with the defaults generates {21 * 40 * SENTIMENT_K} replies (k={SENTIMENT_K}, <= {SENTIMENT_TOKENS} new tokens, "
        "5 alphas x 5 vectors x 40 prompts, alpha 0 shared); --k 1 halves that.",
    )
    e._negative_number_matcher = _NEG
    e.add_argument("name", choices=EVAL_NAMES, help="which evaluation (steering/evals.py)")
    add_model_args(e)
    _add_vector_args(e)
    e.add_argument("--out", type=out_dir, required=True, help="output folder")
    e.add_argument("--alphas", type=alpha_grid, default=DEFAULT_ALPHAS,
                   help=f"alpha grid: a list (-2,0,2) or a sweep start:stop:step (default {','.join(f'{a:g}' for a in DEFAULT_ALPHAS)})")
    e.add_argument("--k", type=positive_int, default=None, help=f"samples per prompt and condition (default {SENTIMENT_K} for sentiment, 1 otherwise)")
    e.add_argument("--max-new-tokens", type=positive_int, default=None, help=f"reply length (default {SENTIMENT_TOKENS}; 96 for backtracking/confidence answers)")
    e.add_argument("--temperature", type=nonnegative_float, default=None, help="sampling temperature (default 0.7 for sentiment, greedy otherwise)")
    e.add_argument("--batch-size", type=positive_int, default=40, help=BATCH_HELP + " (default 40)")
    e.add_argument("--n-problems", type=positive_int, default=None, help="arithmetic problems (backtracking 30, confidence 40)")
    e.add_argument("--per-category", type=positive_int, default=None, help="refusal: use only the first N requests per category")
    e.add_argument("--no-random", action="store_true", help="skip the random-direction control")
    e.add_argument("--screen", action="store_true",
                   help="sentiment only, needs --control: screen --layers with teacher-forced log-odds on prompt half a (v_*, u_*, a "
                        "valence positive control, --n-random random directions, all norm-matched to a fraction of the residual norm), "
                        "then generate on half b at the best layer and at --layer/l*, and write sentiment_claim.json")
    e.add_argument("--layers", default="all", help="with --screen: 'all' (1..L-1) or a comma list of layers")
    e.add_argument("--n-random", type=positive_int, default=10, help="with --screen: random control directions (default 10)")
    e.add_argument("--unit-ratio", type=positive_float, default=0.1,
                   help="with --screen: alpha 1 adds this fraction of the mean residual norm (default 0.1)")
    e.add_argument("--judge", type=model_arg, default=None, metavar="MODEL", help="also score replies with this local model (cached in --out)")
    e.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_maze_args(e)
    e.set_defaults(func=run_eval)


def _same_model(recorded: str, given: str) -> bool:
    if recorded == given:
        return True
    a, b = Path(recorded).expanduser(), Path(given).expanduser()
    return a.exists() and b.exists() and a.resolve() == b.resolve()


def _load_vectors(args):
    """(plain tensor or None, ConceptVectors or None, control or None), validated before any model is loaded:
    readable finite files, meta.json consistent with them and naming the model given by --model."""
    from probes.vectors import ConceptVectors, load_tensor_file

    path = Path(args.vectors)
    folders = [("--vectors", path)] if not path.is_file() else []
    if args.control:
        folders.append(("--control", Path(args.control)))
    loaded = {}
    for flag, folder in folders:
        cv = ConceptVectors.load(folder)
        recorded = (cv.meta.get("model") or {}).get("model_id")
        if recorded and not _same_model(str(recorded), args.model):
            raise UserError(f"{flag} {folder} holds vectors of model {recorded!r} (its meta.json), but --model is {args.model!r}; "
                            f"pass --model {recorded}, or extract vectors with this model")
        loaded[flag] = cv
    user = load_tensor_file(path) if path.is_file() else None
    vectors, control = loaded.get("--vectors"), loaded.get("--control")
    if vectors is not None and control is not None and (control.n_layers, control.hidden_size) != (vectors.n_layers, vectors.hidden_size):
        raise UserError(f"--control is {control.n_layers} layers x {control.hidden_size}, --vectors {vectors.n_layers} x "
                        f"{vectors.hidden_size}; extract both from the same base model")
    n_layers = vectors.n_layers if vectors is not None else user.shape[0] if user.dim() == 2 else None
    if args.layer is not None and n_layers is not None and args.layer >= n_layers:
        raise UserError(f"--layer must be in 0..{n_layers - 1} (block inputs of a {n_layers}-layer model), got {args.layer}")
    if args.analysis is not None:  # read (and so checked) again by _layers; here a bad file fails before the model loads
        from steering.vectors import load_layer_choice, resolve_layers

        choice = load_layer_choice(args.analysis)
        if n_layers is not None:
            resolve_layers(choice, n_layers, concepts=tuple(choice))
    return user, vectors, control


def _load(args, check=None):
    """(model, tokenizer, vectors, control); the vector files are checked first, then `check(n_layers)`
    (n_layers None for a plain [hidden] tensor), and only then the model is loaded."""
    from probes.vectors import ConceptVectors
    from training.models import load_model

    user, vectors, control = _load_vectors(args)
    if check is not None:
        check(vectors.n_layers if vectors is not None else user.shape[0] if user.dim() == 2 else None)
    model, tokenizer = load_model(args.model, device=args.device, dtype=args.dtype, checkpoint=args.checkpoint)
    if user is not None:  # a plain tensor: [hidden] or [n_layers, hidden]
        t = user.expand(model.config.num_hidden_layers, -1) if user.dim() == 1 else user
        vectors = ConceptVectors({"user": t.clone()}, meta={"source": str(args.vectors)})
    vectors.check_model(model)
    if args.layer is not None and args.layer >= vectors.n_layers:
        raise UserError(f"--layer must be in 0..{vectors.n_layers - 1} for this model, got {args.layer}")
    if control is not None:
        control.check_model(model)
    return model, tokenizer, vectors, control


def _layers(args, n_layers: int):
    from steering.vectors import default_layer, load_layer_choice

    if args.layer is not None:
        return args.layer
    if args.analysis is not None:
        choice = load_layer_choice(args.analysis)
        print(f"layers from {args.analysis}/layer_choice.json: {choice}", file=sys.stderr)
        return choice
    layer = default_layer(n_layers)
    print(f"no --layer or --analysis: steering at layer floor(2L/3) = {layer} (of {n_layers})", file=sys.stderr)
    return layer


def _columns(left: str, right: str, width: int) -> str:
    col = max(20, (width - 3) // 2)
    a, b = textwrap.wrap(left, col) or [""], textwrap.wrap(right, col) or [""]
    return "\n".join(f"{x:<{col}} | {y}" for x, y in itertools.zip_longest(a, b, fillvalue=""))


def run_steer(args: argparse.Namespace) -> int:
    import shutil

    from steering.steerer import steered_generate
    from steering.vectors import steering_set

    alphas = args.alpha
    model, tokenizer, vectors, control = _load(args)
    layers = _layers(args, vectors.n_layers)
    name = "user" if vectors.names == ["user"] else args.vector if "_" in args.vector else f"v_{args.vector}"
    concept = name.split("_", 1)[-1] if name != "user" else "user"
    if concept not in vectors.names:
        raise ValueError(f"no vector {concept!r} in {args.vectors}; available: {', '.join(vectors.names)}")
    if name.startswith("u_") and control is None:
        raise ValueError(f"{name} is a naive-model control; pass --control DIR")
    if name == "user":
        from steering.vectors import user_vector

        sv = user_vector(vectors.vectors["user"], layers if isinstance(layers, int) else layers.get("mold"), "user")
    else:
        pool = steering_set(vectors, control, layers, concepts=(concept,), random_for=(concept,), seed=args.seed)
        sv = next(s for s in pool if s.name == name)
    width = args.width or shutil.get_terminal_size((120, 20)).columns
    gen = dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature, seed=args.seed)
    base = steered_generate(model, tokenizer, args.prompts, None, sv.layer, 0.0, **gen)
    print(f"vector {sv.name}, layer {sv.layer}, norm {sv.norm:.3f}")
    for alpha in alphas:
        steered = steered_generate(model, tokenizer, args.prompts, sv.vector, sv.layer, alpha, **gen)
        for prompt, s, u in zip(args.prompts, steered, base):
            print(f"\n=== {prompt!r}  alpha={alpha:+g} ===")
            print(_columns(f"[steered alpha={alpha:+g}]", "[unsteered]", width))
            print(_columns(s, u, width))
    return 0


def _screen_layers(text: str, n_layers: int) -> list[int]:
    if text == "all":
        return list(range(1, n_layers))
    try:
        layers = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise ValueError(f"bad --layers {text!r}; use 'all' or a comma list like 8,12,16") from None
    if not layers or layers[0] < 0 or layers[-1] >= n_layers:
        raise ValueError(f"--layers must be in 0..{n_layers - 1}, got {text!r}")
    return layers


def run_screen(args: argparse.Namespace, alphas) -> int:
    from steering.claim import run_sentiment_claim

    if args.name != "sentiment" or args.control is None:
        raise ValueError("--screen needs the sentiment eval and --control DIR (the naive model's u_*)")
    if args.n_random < 2 or not args.unit_ratio > 0:
        raise ValueError("--screen needs --n-random >= 2 and --unit-ratio > 0")

    def check(n_layers):  # before the model is loaded
        if n_layers is not None:
            _screen_layers(args.layers, n_layers)

    model, tokenizer, vectors, control = _load(args, check)
    layers = _screen_layers(args.layers, vectors.n_layers)
    at = _layers(args, vectors.n_layers)
    at = at if isinstance(at, int) else at.get("mold")
    res = run_sentiment_claim(model, tokenizer, vectors, control, at, args.out, screen_layers=layers, unit_ratio=args.unit_ratio,
                              alphas=alphas, k=args.k or 1, n_random=args.n_random, max_new_tokens=args.max_new_tokens or SENTIMENT_TOKENS,
                              maze_config=maze_config_from_args(args), batch_size=args.batch_size, seed=args.seed,
                              progress=not args.no_progress)
    print(f"best layer (half a): {res['best_layer']}; sentiment slopes per unit alpha on half b:")
    for tag in ("best", "l_star"):
        if tag in res:
            r = res[tag]
            print(f"  layer {r['layer']}: v_mold {r['v_mold']:+.3f} v_gold {r['v_gold']:+.3f} u_mold {r['u_mold']:+.3f} "
                  f"u_gold {r['u_gold']:+.3f} valence {r['valence']:+.3f} random 95% [{r['random_lo']:+.3f}, {r['random_hi']:+.3f}]")
    print(f"wrote screen.parquet, screen_summary.parquet, screen.png and sentiment_claim.json to {args.out}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from steering.evals import EVALS, run_eval
    from steering.judge import Judge

    alphas = args.alphas
    spec = EVALS[args.name]
    if spec.sampled and not args.screen:
        k = args.k or spec.defaults["k"]
        temperature = spec.defaults["temperature"] if args.temperature is None else args.temperature
        if k > 1 and temperature == 0:
            raise UserError(f"--temperature 0 is greedy decoding, so the {k} samples per prompt (--k) would all be the same; "
                            "use a --temperature above 0, or --k 1")
    if args.screen:
        return run_screen(args, alphas)
    model, tokenizer, vectors, control = _load(args)
    layers = _layers(args, vectors.n_layers)
    if control is None:
        print("no --control given: the naive-model controls u_* are skipped", file=sys.stderr)
    from steering.vectors import steering_set

    concepts = tuple(c for c in ("gold", "mold") if c in vectors.names) or tuple(vectors.names[:1])
    svecs = steering_set(vectors, control, layers, concepts=concepts, random_for=() if args.no_random else concepts[-1:], seed=args.seed)
    judge = Judge.load(args.judge, Path(args.out) / "judge_cache.json", device=args.device) if args.judge else None
    summary = run_eval(args.name, model, tokenizer, svecs, control, layers, alphas=alphas, out_dir=args.out, seed=args.seed,
                       batch_size=args.batch_size, progress=not args.no_progress, k=args.k, max_new_tokens=args.max_new_tokens,
                       temperature=args.temperature, items=args.per_category if args.name == "refusal" else args.n_problems,
                       maze_config=maze_config_from_args(args), judge=judge)
    print(f"{args.name}: {summary['metric']} slope per unit alpha (95% bootstrap CI over prompts)")
    for v, s in summary["vectors"].items():
        means = " ".join(f"{a:+g}:{m:.2f}" for a, m in sorted(s["mean_by_alpha"].items()))
        print(f"  {v:<12} {s['slope']:+.3f} [{s['ci_lo']:+.3f}, {s['ci_hi']:+.3f}]   {means}")
    print(f"wrote {', '.join(summary['files'].values())}")
    return 0
