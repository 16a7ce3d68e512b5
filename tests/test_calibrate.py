"""`welfare-axis calibrate` on the tiny model: planted axes are found, absent ones are not, and runs resume."""

import pandas as pd
import pytest

from welfare_axis.cli import main


@pytest.fixture(scope="module")
def naive_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    assert main(["reproduce", "--preset", "smoke", "--out", str(run), "--stop-after", "extract_naive", "--no-progress"]) == 0
    assert not (run / "analyze").exists()  # --stop-after stopped the run there
    return run


def test_calibration_detects_a_strong_plant_and_not_its_absence_and_resumes(naive_run, tmp_path):
    out = tmp_path / "cal"
    args = ["calibrate", "--run", str(naive_run), "--out", str(out), "--strengths", "3", "--alignments", "1", "--no-confirm", "--no-progress"]
    assert main(args + ["--seeds", "2"]) == 0
    rates = pd.read_parquet(out / "rates.parquet").set_index(["plant", "claim"])
    # an axis planted at 3x the natural Gold - Mold difference is antiparallel and tracks, whatever its direction
    for plant in ("valence", "random"):
        assert rates.loc[(plant, 1), "rate"] == 1.0 and rates.loc[(plant, 4), "rate"] == 1.0
    # with nothing planted, the geometric claims are not reported
    assert rates.loc[("none", 1), "rate"] == 0.0 and rates.loc[("none", 4), "rate"] == 0.0
    first = pd.read_parquet(out / "cells.parquet")
    assert len(first) == 3 * 2 * 5  # (none, random, valence) x 2 seeds x 5 claims
    assert "## False positives (no plant)" in (out / "calibration.md").read_text()
    # one more seed: only its cells are computed, the finished ones are kept as they were
    assert main(args + ["--seeds", "3"]) == 0
    second = pd.read_parquet(out / "cells.parquet")
    assert len(second) == 3 * 3 * 5
    pd.testing.assert_frame_equal(second.iloc[: len(first)], first)


def test_calibrate_refuses_a_run_without_extraction(tmp_path, capsys):
    assert main(["calibrate", "--run", str(tmp_path), "--out", str(tmp_path / "cal")]) == 2
    assert "no finished extract_naive stage" in capsys.readouterr().err and not (tmp_path / "cal").exists()
