"""`welfare-axis` command line. Each subcommand lives in a small `cmd_*` module with a
`register(subparsers)` function; errors the user can fix print one line and exit 2."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from welfare_axis import __version__
from welfare_axis.options import UserError

COMMAND_MODULES = (
    "welfare_axis.cmd_env",
    "welfare_axis.cmd_train",
    "welfare_axis.cmd_probe",
    "welfare_axis.cmd_steer",
    "welfare_axis.cmd_reproduce",
    "welfare_axis.cmd_calibrate",
    "welfare_axis.cmd_mechanics",
    "welfare_axis.cmd_demo",
)


class ArgParser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage dump) and exit code 2."""

    def error(self, message: str):  # noqa: D401 - argparse API
        sys.stderr.write(f"{self.prog}: error: {message} (see '{self.prog} --help')\n")
        sys.exit(2)


def build_parser() -> ArgParser:
    parser = ArgParser(
        prog="welfare-axis",
        description="Maze RL, concept vectors and steering for the functional welfare axis study.",
    )
    parser.add_argument("--version", action="version", version=f"welfare-axis {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgParser)
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:  # that command is not built yet
                continue
            raise
        module.register(sub)
    return parser


def _offline_unless_allowed(allow_flag: bool) -> None:
    """No command contacts a model hub unless the user asks (--allow-download or WELFARE_AXIS_ALLOW_DOWNLOAD=1).

    Set before transformers/huggingface_hub are imported (parsing does not import them), which read
    these once; load_model also passes local_files_only, for callers that imported them earlier."""
    from training.models import ALLOW_DOWNLOAD_ENV, downloads_allowed

    if allow_flag:
        os.environ[ALLOW_DOWNLOAD_ENV] = "1"  # for every load_model of this command, however deep
    if not downloads_allowed():
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"


def _quiet_library_warnings() -> None:
    """Library deprecation notices (e.g. transformers' 2-line FutureWarning on every forward) are for
    developers, not users, and would make a one-line error three lines; WELFARE_AXIS_DEBUG=1 shows them."""
    import warnings

    if not os.environ.get("WELFARE_AXIS_DEBUG"):
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)


def main(argv: list[str] | None = None) -> int:
    _quiet_library_warnings()
    parser = build_parser()
    args = parser.parse_args(argv)
    _offline_unless_allowed(bool(getattr(args, "allow_download", False)))
    from training.models import ModelLoadError

    if getattr(args, "no_progress", False):  # quiet means quiet: also transformers' own weight-loading bar
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()

    try:
        return int(args.func(args) or 0)
    except (UserError, ModelLoadError, ValueError, FileNotFoundError) as e:
        if os.environ.get("WELFARE_AXIS_DEBUG"):
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        sys.stderr.write(f"welfare-axis: error: {msg}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("welfare-axis: interrupted\n")
        return 130
    except Exception as e:  # an internal error: still one line, with a way to see more
        if os.environ.get("WELFARE_AXIS_DEBUG"):
            raise
        first = (str(e).strip().splitlines() or [""])[0]
        sys.stderr.write(
            f"welfare-axis: internal error: {type(e).__name__}: {first} (set WELFARE_AXIS_DEBUG=1 for the traceback)\n"
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
