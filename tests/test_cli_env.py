import re
import subprocess
import sys

import pytest

from welfare_axis.cli import main


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    assert "env" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["env", "--help"], ["env", "play", "--help"], ["env", "sample", "--help"]])
def test_every_subcommand_has_help(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0 and "usage:" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [["nope"], ["env", "sample", "--kind", "nope"], ["env", "sample", "-n", "x"], ["env", "sample", "--size", "3"],
     ["env", "sample", "-n", "0"]],
)
def test_bad_arguments_give_one_line_and_exit_2(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "error" in err and "Traceback" not in err


def test_env_sample_prints_transcripts(capsys):
    assert main(["env", "sample", "--kind", "gold", "-n", "2", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert out.count("=== trajectory") == 2 and "[assistant]" in out and "📐" in out


def test_env_play_in_a_terminal():
    moves = "\n".join(["N", "east", "bogus"] + ["S"] * 12) + "\n"
    proc = subprocess.run(
        [sys.executable, "-m", "welfare_axis.cli", "env", "play", "--seed", "4"],
        input=moves, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "invalid move" in proc.stdout
    assert "Episode over: golds" in proc.stdout and "move 15/15" in proc.stdout


def test_env_play_says_where_the_wind_took_the_player():
    """With wind every move, an invalid reply is not "you stay put": the player hears where the gust moved them."""
    moves = "\n".join(["bogus", "N"] + ["bogus"] * 13) + "\n"
    proc = subprocess.run(
        [sys.executable, "-m", "welfare_axis.cli", "env", "play", "--seed", "4", "--wind", "1.0"],
        input=moves, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "invalid move (you stay put)" not in proc.stdout
    assert re.search(r"invalid move, but the wind blew you (north|east|south|west) to \(\d+, \d+\): entered \w+", proc.stdout)
    assert re.search(r"\nN, then the wind blew you (north|east|south|west) to \(\d+, \d+\): entered \w+, \w+", proc.stdout)


def test_move_note_covers_calm_wind_and_the_edge():
    from envs import MazeConfig, MazeEnv, TextActions
    from welfare_axis.cmd_env import move_note

    def play(replies, **cfg):
        maze = MazeEnv(MazeConfig(**cfg))
        env = TextActions(maze)
        env.reset(seed=4)
        notes = []
        for reply in replies:
            before = maze.pos
            notes.append(move_note(env.step(reply)[4], before, maze))
        return notes

    calm = play(["bogus", "E"], wind_prob=0.0)
    assert calm[0] == "invalid move (you stay put)" and calm[1].startswith("E: entered ")
    windy = play(["N"] * 3 + ["bogus"] * 2, wind_prob=1.0, size=5)  # walks into the corner, then gusts hit the edge
    assert windy == [
        "N, then the wind blew you west to (1, 1): entered path, mold",
        "N, then the wind blew you west to (0, 0): entered mold, mold",
        "N, and the wind blew north against the edge: entered nothing",
        "invalid move, but the wind blew you south to (0, 1): entered mold",
        "invalid move (you stay put; the wind blew west against the edge)",
    ]
    relative = play(["bogus"], wind_prob=1.0, phrasing="relative")
    assert re.fullmatch(r"invalid move, but the wind blew you (up|right|down|left) to \(\d+, \d+\): entered \w+", relative[0])


def test_console_script_is_installed():
    from pathlib import Path

    script = Path(sys.executable).parent / "welfare-axis"
    proc = subprocess.run([str(script), "env", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "play" in proc.stdout and "sample" in proc.stdout


def test_module_launch_forms_give_the_same_one_line_user_error(tmp_path):
    """`python -m welfare_axis.cli` (the README's multi-GPU form) and `python -m welfare_axis` behave like the command."""
    import subprocess
    import sys

    for module in ("welfare_axis.cli", "welfare_axis"):
        # a UserError raised by the command itself (bad numbers are refused earlier, by argparse)
        r = subprocess.run([sys.executable, "-m", module, "steer-eval", "sentiment", "--model", "tiny", "--vectors", str(tmp_path / "v"),
                            "--temperature", "0", "--out", str(tmp_path / "e")], capture_output=True, text=True, timeout=120)
        assert r.returncode == 2, (module, r.stderr)
        assert "internal error" not in r.stderr and "--temperature 0 is greedy" in r.stderr


@pytest.mark.parametrize("command", ["rl", "sft"])
def test_every_hyperparameter_flag_has_its_field_doc_as_help(command, capsys):
    import dataclasses

    from training.config import TrainConfig

    from core.fields import field_docs

    with pytest.raises(SystemExit):
        main(["train", command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    docs = field_docs(TrainConfig)
    assert set(docs) == {f.name for f in dataclasses.fields(TrainConfig)}  # no field without a doc
    for name, doc in docs.items():
        if name != "maze":  # set with the maze flags
            assert f"--{name.replace('_', '-')}" in text and doc[:40] in text, name



@pytest.mark.parametrize("command", [["steer", "--vectors", "v"], ["train", "eval", "--out", "e.parquet"], ["mechanics", "drift", "--out", "o"]])
@pytest.mark.parametrize("flag", ["--checkpoint", "--adapter"])
def test_checkpoint_flag_keeps_its_old_name(command, flag, tmp_path):
    """--checkpoint (LoRA adapter or full fine-tune) is still spelled --adapter by older scripts; both set the same option."""
    from welfare_axis.cli import build_parser

    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "adapter_config.json").write_text("{}")  # a checkpoint folder as the parser checks it: an adapter's
    prompt = ["a prompt"] if command[0] == "steer" else []
    assert build_parser().parse_args([*command, "--model", "tiny", flag, str(ck), *prompt]).checkpoint == str(ck)
    if command[0] == "mechanics":
        start = flag.replace("--", "--start-")
        assert build_parser().parse_args([*command, "--model", "tiny", start, str(ck)]).start_checkpoint == str(ck)
