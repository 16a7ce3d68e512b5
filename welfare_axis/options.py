"""Command-line options shared by several subcommands."""

from __future__ import annotations

import argparse
import math
import os
import tempfile
from pathlib import Path

from core.fields import convert, field_docs
from envs import TILE_SETS, MazeConfig
from envs.maze import PHRASINGS
from envs.tiles import PERMUTATIONS


class UserError(Exception):
    """Bad input the user can fix; the message says what is wrong and how to fix it.

    Defined here, not in cli.py: under `python -m welfare_axis.cli` the cli module runs as
    __main__, so a class defined there and imported back by the commands would be a different
    class from the one `main` catches, and a user error would become an internal error."""


# -- argparse types: a bad value is refused while parsing (one line, exit 2), before any slow work --
MAX_MAZE_SIZE = 1000  # a size x size grid per maze; 99999999 would ask for petabytes
MAX_ALPHAS = 1000
MAX_SEED = 2**32 - 1  # numpy's seed range


def _int(text: str) -> int:
    try:
        return int(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def _float(text: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def nonnegative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def seed_int(text: str) -> int:
    value = _int(text)
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"a seed must be in 0..{MAX_SEED}, got {value}")
    return value


def maze_size(text: str) -> int:
    value = _int(text)
    if not 5 <= value <= MAX_MAZE_SIZE:
        raise argparse.ArgumentTypeError(f"the grid side must be in 5..{MAX_MAZE_SIZE}, got {value}")
    return value


def finite_float(text: str) -> float:
    return _float(text)


def nonnegative_float(text: str) -> float:
    value = _float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def positive_float(text: str) -> float:
    value = _float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
    return value


def probability(text: str) -> float:
    value = _float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def parse_alphas(text: str) -> tuple[float, ...]:
    """"4" -> (4,), "-4:4:2" -> (-4, -2, 0, 2, 4) (inclusive), "-4,-2,0" -> a list; ValueError if bad.

    Every alpha is finite, the grid is not empty and has at most MAX_ALPHAS values."""
    how = "use a number (4), a list (-4,-2,0,2,4) or start:stop:step (-4:4:2)"
    try:
        if ":" in text:
            parts = [float(x) for x in text.split(":")]
            if len(parts) != 3 or not all(map(math.isfinite, parts)) or parts[2] <= 0 or parts[1] < parts[0]:
                raise ValueError
            lo, hi, step = parts
            n = int(round((hi - lo) / step))
            if n + 1 > MAX_ALPHAS:
                raise ValueError(f"alpha grid {text!r} has {n + 1} values (at most {MAX_ALPHAS}); use a larger step")
            alphas = tuple(round(lo + i * step, 10) for i in range(n + 1))
        else:
            alphas = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError as e:
        raise ValueError(str(e) if str(e).startswith("alpha grid") else f"bad alpha {text!r}; {how}") from None
    if not alphas:
        raise ValueError(f"no alpha in {text!r}; {how}")
    if not all(math.isfinite(a) for a in alphas):
        raise ValueError(f"alphas must be finite numbers, got {text!r}; {how}")
    if len(alphas) > MAX_ALPHAS:
        raise ValueError(f"{len(alphas)} alphas (at most {MAX_ALPHAS})")
    return alphas


def _refused(check, text, errors=(ValueError,)):
    """check(text), its error as argparse's one-line refusal."""
    try:
        return check(text)
    except errors as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def alpha_grid(text: str) -> tuple[float, ...]:
    """argparse type for --alpha/--alphas (see parse_alphas)."""
    return _refused(parse_alphas, text)


def device_arg(text: str) -> str:
    """--device: cpu, cuda, cuda:N or mps, and only if this machine has it."""
    from training.models import ModelLoadError, check_device

    return _refused(check_device, text, (ModelLoadError,))


def model_arg(text: str) -> str:
    """--model: refuses a folder that is not a model, or a file, at once (the cache lookup waits for load_model)."""
    from training.models import ModelLoadError, check_model_name

    # downloads may be allowed by a later flag
    return _refused(lambda t: check_model_name(t, allow_download=True), text, (ModelLoadError,))


def boolean(text) -> bool:
    """A flag's or a config field's true/false (1/0, yes/no, on/off; a YAML bool as it is)."""
    return _refused(lambda t: convert(t, bool, "the value"), text)


def checkpoint_arg(text: str) -> str:
    """--checkpoint: refused while parsing, before any model is loaded, unless it is a checkpoint's model folder."""
    from training.models import ModelLoadError, check_checkpoint

    return _refused(check_checkpoint, text, (ModelLoadError,))


def _check_writable(target: Path, flag: str) -> None:
    """The nearest existing folder at or above `target` must be a folder this process can write in."""
    anc = target
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise argparse.ArgumentTypeError(f"{anc} is a file, so {target} cannot be created; pass another {flag}")
    try:
        tempfile.TemporaryFile(dir=anc).close()  # real permissions (root, ACLs, read-only mounts), not mode bits
    except OSError as e:
        raise argparse.ArgumentTypeError(f"cannot write in {anc} ({e.strerror or e}); pass an {flag} you can write to") from None


def out_dir(text: str) -> str:
    """--out naming an output folder: not an existing file, and writable."""
    if not text.strip():
        raise argparse.ArgumentTypeError("empty path; pass an output folder")
    p = Path(text).expanduser()
    if p.exists() and not p.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is an existing file, but --out names a folder; pass a folder path")
    _check_writable(p, "--out folder")
    return text


def out_file(text: str) -> str:
    """--out naming an output file: not an existing folder, in a writable folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError("empty path; pass an output file such as runs/eval.parquet")
    p = Path(text).expanduser()
    if p.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder, but --out names a file; pass a file path such as {os.path.join(text, 'eval.parquet')}")
    _check_writable(p.parent if str(p.parent) else Path("."), "--out file")
    return text


def parquet_file(text: str) -> str:
    """An existing, readable .parquet file (e.g. --baseline, the output of another `train eval`)."""
    p = Path(text).expanduser()
    if not p.exists():
        raise argparse.ArgumentTypeError(f"{text} does not exist; run `welfare-axis train eval --out {text}` first")
    if p.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; pass the .parquet file written by `welfare-axis train eval`")
    try:
        import pyarrow.parquet as pq

        pq.read_metadata(p)
    except Exception as e:  # ArrowInvalid (not parquet, truncated), OSError
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise argparse.ArgumentTypeError(f"{text} is not a readable parquet file ({first[:120]}); pass the file written by `welfare-axis train eval`") from None
    return text


def add_download_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--allow-download", action="store_true",
                   help="let a Hugging Face id that is not in the local cache be downloaded (default: offline; "
                        "or set WELFARE_AXIS_ALLOW_DOWNLOAD=1)")


_MAZE_FLAGS = {"--size": "size", "--n-moves": "n_moves", "--tile-set": "tile_set", "--permutation": "permutation",
               "--phrasing": "phrasing", "--wind": "wind_prob"}
_MAZE_DOCS = field_docs(MazeConfig)
MAZE_HELP = {flag: _MAZE_DOCS[name] for flag, name in _MAZE_FLAGS.items()}  # every command's maze flags, from MazeConfig's field docs


def add_maze_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("maze")
    g.add_argument("--size", type=maze_size, default=100, help=MAZE_HELP["--size"] + f" (5..{MAX_MAZE_SIZE}; default 100)")
    g.add_argument("--tile-set", default="office", choices=sorted(TILE_SETS), help=MAZE_HELP["--tile-set"])
    g.add_argument("--permutation", default="pmg", choices=PERMUTATIONS, help=MAZE_HELP["--permutation"])
    g.add_argument("--phrasing", default="cardinal", choices=PHRASINGS, help=MAZE_HELP["--phrasing"] + " (default cardinal)")
    g.add_argument("--wind", type=probability, default=0.1, help=MAZE_HELP["--wind"] + " (default 0.1)")


def maze_config_from_args(args: argparse.Namespace) -> MazeConfig:
    return MazeConfig(
        size=args.size, tile_set=args.tile_set, permutation=args.permutation, phrasing=args.phrasing, wind_prob=args.wind
    )


DTYPE_HELP = "weights' dtype (default float32; bfloat16 on a GPU halves memory)"
SEED_HELP = "random seed: the same seed gives the same mazes, draws and numbers (default 0)"
BATCH_HELP = "sequences per forward pass (memory vs speed; the numbers do not depend on it)"
NO_PROGRESS_HELP = "no progress bars"


def add_model_args(p: argparse.ArgumentParser, checkpoint: bool = True) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", type=model_arg, default="smollm2-135m-instruct",
                   help="built-in name, local folder or HF id in the local cache (default smollm2-135m-instruct; 'tiny' for a random test model)")
    if checkpoint:
        g.add_argument("--checkpoint", "--adapter", dest="checkpoint", type=checkpoint_arg, default=None,
                       help="a training checkpoint's model folder (checkpoints/step_*/model): a LoRA adapter of --model, or a full "
                            "fine-tune's whole model (which --model also takes); --adapter is the older name of this flag")
    g.add_argument("--device", type=device_arg, default="cpu", help="cpu (default), cuda, cuda:N or mps")
    add_download_arg(g)
    g.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"], help=DTYPE_HELP)
