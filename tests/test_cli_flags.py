"""Every flag of every command says what it does, and --help says what and why, never when."""

import argparse
import re

from welfare_axis.cli import build_parser


def _actions(parser, path=()):
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, sub in a.choices.items():
                yield from _actions(sub, (*path, name))
        elif not isinstance(a, (argparse._HelpAction, argparse._VersionAction)):
            yield " ".join(path), a


def test_every_flag_has_help_without_dates_commits_or_issue_numbers():
    actions = list(_actions(build_parser()))
    assert len(actions) > 150  # every command's flags were walked
    missing = [f"{cmd} {'/'.join(a.option_strings) or a.dest}" for cmd, a in actions if not (a.help or "").strip()]
    assert missing == []
    when = re.compile(r"\b20\d\d-\d\d-\d\d\b|\bissue \d+|\b[0-9a-f]{7,40}\b(?<![0-9]{7})")
    dated = [f"{cmd} {'/'.join(a.option_strings)}: {a.help}" for cmd, a in actions if when.search(a.help or "")]
    assert dated == []
