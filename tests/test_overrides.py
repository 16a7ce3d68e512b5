"""`reproduce --set` / `--config`: every field converted and checked by its type, bad ones refused in one line."""

import pytest

from welfare_axis.cli import main
from welfare_axis.overrides import apply_overrides, load_config_file, parse_assignments
from welfare_axis.pipeline import get_preset


def test_overrides_convert_by_the_fields_type():
    p, train = apply_overrides(get_preset("smoke"), parse_assignments(
        ["alphas=-2,0,2", "mechanics.n_maze=8", "screen_layers=none", "steer_trained=false", "train.lr=1e-4", "train.maze.n_moves=3"]))
    assert p.alphas == (-2.0, 0.0, 2.0) and p.mechanics.n_maze == 8 and p.screen_layers is None and p.steer_trained is False
    assert train == {"lr": 1e-4, "maze": {"n_moves": 3}}
    assert get_preset("smoke").alphas != p.alphas  # the preset itself is untouched
    assert apply_overrides(get_preset("smoke"), {"mechanics": "none"})[0].mechanics is None


@pytest.mark.parametrize("item, message", [
    ("alphas=a", "expected a number"), ("alphas=nan", "finite"), ("extract_n=1.5", "whole number"), ("nope=1", "unknown field"),
    ("train.nope=1", "unknown field train.nope"), ("train.seed=3", "use --seed"), ("mechanics=3", "group of fields"),
    ("evals=sentiment,vibes", "evals must be among"), ("extract_n=0", "at least 1"), ("screen_ratios=0.5,2", r"\(0, 1\]"), ("estimates=1", "progress bar"), ("alphas", "expected FIELD=VALUE"),
])
def test_bad_overrides_are_refused(item, message):
    with pytest.raises(ValueError, match=message):
        apply_overrides(get_preset("smoke"), parse_assignments([item]))


def test_config_file_flattens_nested_keys_and_bad_files_are_one_line(tmp_path, capsys):
    f = tmp_path / "c.yaml"
    f.write_text("alphas: [-1, 1]\ntrain:\n  lr: 0.001\n  maze: {n_moves: 2}\nmechanics:\n  n_maze: 4\n")
    assert load_config_file(f) == {"alphas": [-1, 1], "train.lr": 0.001, "train.maze.n_moves": 2, "mechanics.n_maze": 4}
    (tmp_path / "bad.yaml").write_text("alphas: [1, 2\n")
    for extra in (["--config", str(tmp_path / "bad.yaml")], ["--config", str(tmp_path / "missing.yaml")], ["--set", "nope=1"]):
        assert main(["reproduce", "--preset", "smoke", "--out", str(tmp_path / "run"), *extra]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "error" in err
    assert not (tmp_path / "run").exists()  # refused before any work
