"""The README is a front page: at most 8 KB, its links resolve, its commands exist as written and its
Python example runs."""

import re
import runpy
from pathlib import Path

import pytest

from welfare_axis.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _block(after: str, lang: str) -> str:
    start = README.index(after)
    m = re.search(rf"```{lang}\n(.*?)```", README[start:], re.S)
    assert m, f"no {lang} block after {after!r}"
    return m.group(1)


def test_readme_is_at_most_8_kb_and_its_links_resolve():
    assert len(README.encode()) <= 8192
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README):
        if not target.startswith("http"):
            assert (ROOT / target).exists(), target


def _commands() -> list[list[str]]:
    """Each `welfare-axis ...` line of the Commands block as its subcommand words, alternatives (a|b|c) expanded."""
    out = []
    for line in _block("## Commands", "bash").splitlines():
        words = line.split("#")[0].split()
        if not words or words[0] != "welfare-axis":
            continue
        path = []
        for w in words[1:]:
            if w.startswith(("-", "[")) or w == "..." or w.isupper() or "/" in w:
                break
            path.append(w)
        alternatives = [[]]
        for w in path:
            alternatives = [a + [x] for a in alternatives for x in w.split("|") if x]
        out += alternatives
    return out


def test_every_readme_command_exists(capsys):
    commands = _commands()
    assert ["reproduce"] in commands and ["mechanics", "matched"] in commands and ["demo"] in commands
    for cmd in commands:
        with pytest.raises(SystemExit) as e:
            main(cmd + ["--help"])
        assert e.value.code == 0, cmd
    capsys.readouterr()


def test_readme_quick_start_names_the_make_targets():
    quick = _block("## Quick start", "bash")
    targets = set(re.findall(r"^(\w[\w-]*):", (ROOT / "Makefile").read_text(), re.M))
    for name in re.findall(r"^make (\S+)", quick, re.M):
        assert name in targets, name


@pytest.mark.integration
def test_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    script = tmp_path / "example.py"
    script.write_text(_block("## From Python", "python"))
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(script), run_name="__main__")
    printed = capsys.readouterr().out
    assert printed.startswith("[") and len(printed) > 20  # a list holding one generated reply
