"""`welfare-axis reproduce` (the whole study) and `welfare-axis report` (rebuild the report)."""

from __future__ import annotations

import argparse
from pathlib import Path

from welfare_axis.options import DTYPE_HELP, add_download_arg, device_arg, model_arg, out_dir, seed_int
from welfare_axis.pipeline import OPTIONAL_STAGES, PLANTS, SECONDARY, TRAININGS
from welfare_axis.robustness import DEFAULT_VARIANTS, VARIANTS, check_variants
from welfare_axis.study_config import PRESETS
from welfare_axis.stages import STAGES


def register(sub) -> None:
    p = sub.add_parser("reproduce", help="run the whole study (cached, resumable stages) and write a report")
    p.add_argument("--preset", default="cpu-small", choices=list(PRESETS),
                   help="smoke (tiny model, minutes), cpu-small (default model, within the hour on 2 cores), paper (GPU sizes)")
    p.add_argument("--out", type=out_dir, default=None, help="run folder (default runs/<preset>)")
    p.add_argument("--model", type=model_arg, default=None, help="override the preset's model (built-in name, local folder or HF id)")
    p.add_argument("--training", default=None, choices=TRAININGS,
                   help="how the trained model is made: RL, SFT on scripted good trajectories, or SFT then RL from the SFT "
                        "model (default: the preset's; cpu-small and smoke: sft+rl, paper: rl)")
    p.add_argument("--plant", default=None, choices=PLANTS,
                   help="skip training and plant a known axis into the naive model instead, at a layer no fixed-layer claim "
                        "reads: 'valence' (made from VADER-lexicon words: a positive control) or 'random' (a negative control: "
                        "an axis, but not a valence axis)")
    p.add_argument("--stories", default=None, help="emotion stories JSON for claim 3 and the steering positive control "
                   "(default: the shipped set; format of probes/data/emotion_stories.json)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", dest="set_",
                   help="change one field of the study config (steer.alphas=-2,0,2; extract.n=400; mechanics.n_maze=8; "
                        "mechanics=none; train.lr=1e-4; maze.n_moves=7); repeatable; recorded in run_config.json, and only "
                        "the stages that use the field re-run; --fields lists them all")
    p.add_argument("--config", default=None, metavar="FILE.yaml",
                   help="a YAML file of the same FIELD: VALUE overrides (flat or nested); --set wins over it")
    p.add_argument("--fields", action="store_true",
                   help="print every field --set and --config can change, with its type, the preset's value and what it does, and exit")
    p.add_argument("--force", action="append", default=[], choices=STAGES, metavar="STAGE",
                   help=f"redo this stage (and what depends on it); repeatable; one of {', '.join(STAGES)}")
    p.add_argument("--stop-after", default=None, choices=STAGES, metavar="STAGE",
                   help="stop once this stage is finished (no report); e.g. extract_trained prepares a seed's models and "
                        "activations, and a later run without it reads them from the cache")
    p.add_argument("--skip", action="append", default=[], choices=(*OPTIONAL_STAGES, SECONDARY), metavar="PART",
                   help=f"leave out what no claim verdict reads; repeatable; one of {', '.join(OPTIONAL_STAGES)} (stages) or "
                        f"{SECONDARY} (claim 5's generated self-reports and the other steering evals, and so steer_trained)"),
    p.add_argument("--seed", type=seed_int, default=0,
                   help="draws the mazes, trajectories, training, prompt draws and null directions; seeds listed as exploration "
                        "seeds in probes/protocol.py give exploratory verdicts, any other seed confirmatory ones")
    p.add_argument("--device", type=device_arg, default="cpu", help="cpu (default), cuda, cuda:N or mps")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"], help=DTYPE_HELP)
    p.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")
    add_download_arg(p)
    p.set_defaults(func=run_reproduce)

    _register_robustness(sub)

    r = sub.add_parser("report", help="rebuild report.md/report.html of a reproduce run from its files; with several runs "
                                      "(e.g. one per seed), also print the claims table across them")
    r.add_argument("run", nargs="+", help="run folder(s) of 'welfare-axis reproduce'")
    r.set_defaults(func=run_report)


def run_reproduce(args: argparse.Namespace) -> int:
    from welfare_axis.pipeline import reproduce

    if args.fields:
        print(fields_table(args.preset))
        return 0

    if args.stories is not None:  # a bad file fails now, not after training
        from probes.emotion import load_stories

        load_stories(args.stories)
    from welfare_axis.overrides import load_config_file, parse_assignments

    overrides = {**(load_config_file(args.config) if args.config else {}), **parse_assignments(args.set_)}
    out = Path(args.out or f"runs/{args.preset}")
    paths = reproduce(
        preset=args.preset, out=out, model=args.model, training=args.training, plant=args.plant, stories=args.stories, force=set(args.force),
        seed=args.seed, device=args.device, dtype=args.dtype, progress=not args.no_progress, stop_after=args.stop_after,
        skip=set(args.skip), overrides=overrides,
    )
    if paths is None:
        print(f"stopped after {args.stop_after}: {out}")
        return 0
    md, html = paths
    print(f"report: {md}\n        {html}")
    return 0


def _register_robustness(sub) -> None:
    m = sub.add_parser("robustness", help="claim 6 as a matrix: the whole study in named variants of one config, sharing stages",
                       description="Runs `reproduce` once per variant into OUT/VARIANT (stages whose key and inputs match a "
                                   "sibling's are linked in, not run again) and writes OUT/robustness.md/.json/.png: every claim's "
                                   "verdict per variant, and claim 6's verdict under the protocol. Variants: " + "; ".join(
                                       f"{v.name}: {v.what}" for v in VARIANTS.values()))
    m.add_argument("--preset", default="cpu-small", choices=list(PRESETS), help="the study config every variant starts from")
    m.add_argument("--out", type=out_dir, default="runs/robustness", help="matrix folder (one run folder per variant inside)")
    m.add_argument("--variants", type=_variant_list, default=list(DEFAULT_VARIANTS),
                   help=f"comma-separated variants (default {','.join(DEFAULT_VARIANTS)}: the reference and the ones claim 6 requires)")
    m.add_argument("--reuse", action="append", default=[], metavar="RUN",
                   help="an existing reproduce run whose matching stages the variants may link in (e.g. the same seed's run); repeatable")
    m.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", dest="set_", help="a study-config override for every variant")
    m.add_argument("--config", default=None, metavar="FILE.yaml", help="a YAML file of overrides for every variant; --set wins over it")
    m.add_argument("--skip", action="append", default=[], choices=(*OPTIONAL_STAGES, SECONDARY), metavar="PART",
                   help="leave out what no claim verdict reads in every variant (as reproduce --skip)")
    m.add_argument("--seed", type=seed_int, default=0, help="every variant's seed (a confirmatory matrix uses a seed no rule was read on)")
    m.add_argument("--device", type=device_arg, default="cpu", help="cpu (default), cuda, cuda:N or mps")
    m.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"], help=DTYPE_HELP)
    m.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")
    m.set_defaults(func=run_robustness)


def _variant_list(text: str) -> list[str]:
    try:
        return check_variants([x.strip() for x in text.split(",") if x.strip()])
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def run_robustness(args: argparse.Namespace) -> int:
    from welfare_axis.overrides import load_config_file, parse_assignments
    from welfare_axis.robustness import run_matrix

    for r in args.reuse:
        if not (Path(r) / "run_config.json").exists():
            raise ValueError(f"--reuse {r} is not a reproduce run folder (no run_config.json)")
    overrides = {**(load_config_file(args.config) if args.config else {}), **parse_assignments(args.set_)}
    md = run_matrix(args.preset, args.out, args.variants, seed=args.seed, overrides=overrides, reuse=args.reuse, device=args.device,
                    dtype=args.dtype, progress=not args.no_progress, skip=set(args.skip))
    print(md.read_text())
    print(f"matrix: {md}\n        {md.with_suffix('.png')}")
    return 0


def fields_table(preset: str) -> str:
    """Every settable field: its key, type, value in `preset` and doc."""
    from training.config import config_from_preset

    from welfare_axis.overrides import field_paths
    from welfare_axis.pipeline import get_preset

    config = get_preset(preset)
    train = config_from_preset(config.train_preset)
    lines = [f"Fields of the {preset} preset (set with --set KEY=VALUE or a --config YAML file):"]
    for key, (hint, doc) in field_paths().items():
        value = _lookup(train, key.partition(".")[2]) if key.startswith("train.") else \
            _lookup(train.maze, key.partition(".")[2]) if key.startswith("maze.") else _lookup(config, key)
        lines.append(f"  {key} = {value!r}  ({hint.__name__ if isinstance(hint, type) else str(hint)})\n      {doc}")
    return "\n".join(lines)


def _lookup(obj, key: str):
    for part in key.split("."):
        obj = None if obj is None else getattr(obj, part)
    return obj


def run_report(args: argparse.Namespace) -> int:
    from welfare_axis.report import build_report, seeds_table_markdown

    runs = [Path(r) for r in args.run]
    for run in runs:  # every folder is checked before any report is written
        if not (run / "run_config.json").exists():
            raise ValueError(f"{run} is not a reproduce run folder (no run_config.json); run 'welfare-axis reproduce --out {run}' first")
    for run in runs:
        md, html = build_report(run)
        print(f"report: {md}\n        {html}")
    if len(runs) > 1:
        print(seeds_table_markdown(runs))
    return 0
