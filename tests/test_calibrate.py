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
    args = ["calibrate", "--run", str(naive_run), "--out", str(out), "--strengths", "12", "--alignments", "1", "--no-confirm", "--no-progress"]
    assert main(args + ["--seeds", "2", "--null-seeds", "4"]) == 0
    rates = pd.read_parquet(out / "rates.parquet").set_index(["plant", "claim"])
    # an axis planted at 12x the natural Gold - Mold difference tracks, whatever its direction, and its halves are
    # more antiparallel than the two sides of a null run (the tiny model's raw diffs of means are near -1 already, so
    # claim 1's margin over the naive side is not a given here)
    cells = pd.read_parquet(out / "cells.parquet")
    for plant in ("valence", "random"):
        assert rates.loc[(plant, 4), "rate"] == 1.0
        c1 = cells[(cells.claim == 1)]
        assert c1[c1.plant == plant]["value"].mean() < c1[c1.plant == "none"]["value"].mean()
    # with nothing planted, the geometric claims are not reported (the two sides are disjoint samples of the naive model)
    assert rates.loc[("none", 1), "rate"] == 0.0 and rates.loc[("none", 4), "rate"] == 0.0
    assert cells[cells.plant == "none"].groupby("seed")["value"].first().nunique() == 4  # null runs differ in their data
    first = pd.read_parquet(out / "cells.parquet")
    assert len(first) == (4 + 2 * 2) * 5  # (4 null runs + (random, valence) x 2 seeds) x 5 claims
    assert "## False positives (no plant)" in (out / "calibration.md").read_text()
    # one more seed: only its cells are computed, the finished ones are kept as they were
    assert main(args + ["--seeds", "3", "--null-seeds", "4"]) == 0
    second = pd.read_parquet(out / "cells.parquet")
    assert len(second) == (4 + 2 * 3) * 5
    pd.testing.assert_frame_equal(second.iloc[: len(first)], first)


def test_calibrate_refuses_a_run_without_extraction(tmp_path, capsys):
    assert main(["calibrate", "--run", str(tmp_path), "--out", str(tmp_path / "cal")]) == 2
    assert "no finished extract_naive stage" in capsys.readouterr().err and not (tmp_path / "cal").exists()


def test_wilson_interval_hand_values_and_bounds():
    from welfare_axis.calibrate import _wilson

    lo, hi = _wilson(3, 5)
    assert lo == pytest.approx(0.2307, abs=1e-4) and hi == pytest.approx(0.8824, abs=1e-4)
    assert _wilson(0, 20)[0] == 0.0 and _wilson(20, 20)[1] == 1.0  # never a "-0.00" or a bound past 1
