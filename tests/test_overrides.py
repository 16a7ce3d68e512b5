"""`reproduce --set` / `--config`: every field of the study config converted and checked by its type, bad ones refused in one line."""

import pytest

from welfare_axis.cli import main
from welfare_axis.overrides import apply_overrides, field_paths, load_config_file, parse_assignments
from welfare_axis.pipeline import get_preset


def test_overrides_convert_by_the_fields_type():
    p, train = apply_overrides(get_preset("smoke"), parse_assignments(
        ["steer.alphas=-2,0,2", "mechanics.n_maze=8", "steer.screen_layers=none", "steer.trained=false", "extract.n=12",
         "train.lr=1e-4", "maze.n_moves=3"]))
    assert p.steer.alphas == (-2.0, 0.0, 2.0) and p.mechanics.n_maze == 8 and p.steer.screen_layers is None
    assert p.steer.trained is False and p.extract.n == 12 and p.extract.n_naive == 60  # the rest of the group is kept
    assert train == {"lr": 1e-4, "maze": {"n_moves": 3}}
    assert get_preset("smoke").steer.alphas == (-4.0, 0.0, 4.0)  # the preset itself is untouched
    assert apply_overrides(get_preset("smoke"), {"mechanics": "none"})[0].mechanics is None


def test_presets_are_overrides_of_the_defaults():
    smoke, default = get_preset("smoke"), get_preset("cpu-small")
    assert (smoke.name, smoke.model, smoke.extract.n, smoke.plant.scale) == ("smoke", "tiny", 48, 8.0)
    assert default.extract == type(default.extract)() and default.steer.screen_prompts == 8  # cpu-small is the defaults
    assert get_preset("paper").training == "rl" and get_preset("paper").steer.alphas == (-4.0, -2.0, 0.0, 2.0, 4.0)


def test_every_field_has_a_doc():
    paths = field_paths()
    assert {"steer.alphas", "extract.n", "plant.scale", "mechanics.n_maze", "train.lr", "maze.n_moves", "eval.mazes"} <= set(paths)
    assert not [k for k, (_, doc) in paths.items() if not doc]
    assert "train.seed" not in paths and "estimates" not in paths


@pytest.mark.parametrize("item, message", [
    ("steer.alphas=a", "must be a number"), ("steer.alphas=nan", "finite"), ("extract.n=1.5", "whole number"), ("nope=1", "unknown field"),
    ("alphas=1", "did you mean steer.alphas"), ("train.nope=1", "unknown field 'train.nope'"), ("train.seed=3", "use --seed"),
    ("train.maze.n_moves=3", "set maze.n_moves"), ("mechanics=3", "group of fields"), ("steer.evals=sentiment,vibes", "evals must be among"),
    ("extract.n=0", "at least 1"), ("mechanics.n_maze=0", "at least 1"), ("steer.screen_ratios=0.5,2", r"\(0, 1\]"),
    ("estimates=1", "progress bar"), ("name=x", "--preset"), ("steer.alphas", "expected FIELD=VALUE"), ("training=ppo", "training must be"),
])
def test_bad_overrides_are_refused(item, message):
    with pytest.raises(ValueError, match=message):
        apply_overrides(get_preset("smoke"), parse_assignments([item]))


def test_fields_lists_every_key_with_the_presets_value(capsys):
    assert main(["reproduce", "--preset", "smoke", "--fields"]) == 0
    out = capsys.readouterr().out
    assert "extract.n = 48" in out and "steer.alphas = (-4.0, 0.0, 4.0)" in out and "maze.n_moves = " in out and "train.lr = " in out


def test_config_file_flattens_nested_keys_and_bad_files_are_one_line(tmp_path, capsys):
    f = tmp_path / "c.yaml"
    f.write_text("steer:\n  alphas: [-1, 1]\ntrain:\n  lr: 0.001\nmaze: {n_moves: 2}\nmechanics:\n  n_maze: 4\n")
    assert load_config_file(f) == {"steer.alphas": [-1, 1], "train.lr": 0.001, "maze.n_moves": 2, "mechanics.n_maze": 4}
    (tmp_path / "bad.yaml").write_text("steer: {alphas: [1, 2\n")
    for extra in (["--config", str(tmp_path / "bad.yaml")], ["--config", str(tmp_path / "missing.yaml")], ["--set", "nope=1"]):
        assert main(["reproduce", "--preset", "smoke", "--out", str(tmp_path / "run"), *extra]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "error" in err
    assert not (tmp_path / "run").exists()  # refused before any work


@pytest.mark.parametrize("value, hint, expected", [
    ("3", int, 3), (3.0, int, 3), ("12345678901234567890", int, 12345678901234567890), ("-0.5", float, -0.5), ("off", bool, False),
    (True, bool, True), ("-1,2", tuple[float, ...], (-1.0, 2.0)), ("none", int | None, None),
])
def test_one_conversion_serves_the_command_line_files_and_the_api(value, hint, expected):
    from core.fields import convert

    assert convert(value, hint, "x") == expected and type(convert(value, hint, "x")) is type(expected)


@pytest.mark.parametrize("value, hint, message", [
    (True, int, "whole number"), ("1.5", int, "whole number"), ("inf", float, "finite"), ([1], float, "a number"), ("maybe", bool, "true or false"),
])
def test_the_conversion_refuses_in_one_line(value, hint, message):
    from core.fields import convert

    with pytest.raises(ValueError, match=message):
        convert(value, hint, "x")
