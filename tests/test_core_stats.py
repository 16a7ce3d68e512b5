"""core.stats: bootstrap intervals with one result shape, against hand-computed cases."""

import math

import numpy as np
import pytest

from core import stats


def test_mean_and_ratio_cis():
    m = stats.mean_ci([2.0, 2.0, 2.0], n_boot=50)
    assert (m["value"], m["ci_lo"], m["ci_hi"]) == (2.0, 2.0, 2.0)
    r = stats.ratio_of_means_ci([2.0, 4.0, 6.0], [1.0, 2.0, 3.0], n_boot=200, paired=True)
    assert r["value"] == pytest.approx(2.0) and r["ci_lo"] == pytest.approx(2.0) and r["ci_hi"] == pytest.approx(2.0)
    u = stats.ratio_of_means_ci([1.0, 3.0], [1.0, 1.0, 1.0], n_boot=500)
    assert u["value"] == pytest.approx(2.0) and 1.0 <= u["ci_lo"] <= 2.0 <= u["ci_hi"] <= 3.0
    assert math.isnan(stats.ratio_of_means_ci([], [1.0])["value"])
    with pytest.raises(ValueError):
        stats.ratio_of_means_ci([1.0], [1.0, 2.0], paired=True)


def test_mean_diff_ci_paired_equals_the_mean_ci_of_differences_and_unpaired_resamples_each():
    a = np.arange(20.0)
    r = stats.mean_diff_ci(a + 1, a)
    assert r["value"] == pytest.approx(1.0) and r["ci_lo"] == pytest.approx(1.0) and stats.excludes_zero(r)
    r0 = stats.mean_diff_ci(np.array([1.0, -1.0] * 10), np.zeros(20))
    assert r0["ci_lo"] < 0 < r0["ci_hi"] and not stats.excludes_zero(r0)
    x, y = np.random.default_rng(1).normal(size=(2, 30))
    assert stats.mean_diff_ci(x, y, seed=4) == stats.mean_ci(x - y, seed=4)
    u = stats.mean_diff_ci(x + 5, y, paired=False)
    assert u["value"] == pytest.approx(5 + x.mean() - y.mean()) and u["ci_lo"] < u["value"] < u["ci_hi"]
    with pytest.raises(ValueError):
        stats.mean_diff_ci([1.0], [1.0, 2.0])
    assert math.isnan(stats.mean_diff_ci([], [1.0], paired=False)["value"])
