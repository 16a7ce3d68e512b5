"""`welfare-axis calibrate`: power and false-positive tables of the protocol's read-outs (welfare_axis/calibrate.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from welfare_axis.options import device_arg, out_dir, positive_int


def _floats(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, e.g. 0.5,1,2; got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one number")
    return values


def _alignments(text: str) -> tuple[float, ...]:
    values = _floats(text)
    if not all(0 < c <= 1 for c in values):
        raise argparse.ArgumentTypeError(f"alignments are cosines in (0, 1] (random plants are always run); got {text!r}")
    return values


def register(sub) -> None:
    from welfare_axis.calibrate import CalibrationConfig

    d = CalibrationConfig()
    p = sub.add_parser("calibrate", help="measure the protocol's power and false-positive rate with axes planted into a run's naive activations",
                       description="Plants axes of graded strength and valence alignment (and none) into the maze-naive model's "
                                   "extraction activations of a reproduce run, runs every claim's primary read-out with the "
                                   "protocol's own code and writes cells.parquet (one row per run and claim), rates.parquet and "
                                   "calibration.md (power and false-positive tables with 95%% Wilson intervals). Resumable.")
    p.add_argument("--run", required=True, help="a reproduce run folder whose extract_naive stage is finished")
    p.add_argument("--out", type=out_dir, required=True, help="output folder (re-running it continues where it stopped)")
    p.add_argument("--strengths", type=_floats, default=d.strengths,
                   help="plant norms as multiples of the natural ||mean Gold - mean Mold|| at the plant layer (default %(default)s)")
    p.add_argument("--alignments", type=_alignments, default=d.alignments,
                   help="cosines of the plant with the lexicon valence direction (default %(default)s); random plants are always added")
    p.add_argument("--seeds", type=positive_int, default=d.seeds, help="repeats of every planted cell (default %(default)s)")
    p.add_argument("--null-seeds", type=positive_int, default=d.null_seeds, help="runs without a plant, for the false-positive rates "
                   "(default %(default)s)")
    p.add_argument("--n-per-class", type=positive_int, default=None, help="examples per class on each side of a run (default: half "
                   "the naive extraction's, at most 800, the cpu-small trained model's N)")
    p.add_argument("--noise", type=float, default=d.noise, help="per-move relative SD of the plant's size (default %(default)s)")
    p.add_argument("--no-confirm", action="store_true", help="skip claim 5's finite-alpha confirmation (counts such runs as not reproduced)")
    p.add_argument("--device", type=device_arg, default="cpu", help="cpu (default), cuda, cuda:N or mps")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from welfare_axis.calibrate import CalibrationConfig, run_calibration

    if not 0 <= args.noise < 10:
        raise ValueError(f"--noise must be in [0, 10), got {args.noise}")
    if not (Path(args.run) / "extract_naive" / "meta.json").exists():
        raise ValueError(f"{args.run} has no finished extract_naive stage; run 'welfare-axis reproduce --out {args.run} "
                         "--stop-after extract_naive' first")
    cfg = CalibrationConfig(strengths=args.strengths, alignments=args.alignments, seeds=args.seeds, null_seeds=args.null_seeds,
                            n_per_class=args.n_per_class, noise=args.noise, confirm=not args.no_confirm)
    summary = run_calibration(args.run, args.out, cfg, device=args.device, progress=not args.no_progress)
    print(f"calibration: {Path(args.out) / 'calibration.md'} ({summary['cells']} runs, {summary['wall_time_s'] / 60:.1f} min)")
    return 0
