"""The protocol's null families, family-wise selection over a band, claim 1's disjoint parts and paired tracking."""

import numpy as np
import pandas as pd
import pytest

from probes import nulls
from probes.antiparallel import claim1_statistics, equal_n, maze_parts
from probes.layer_choice import nuisance_strata
from probes.protocol import PROTOCOL, LayerBand, Protocol
from probes.tracking import bootstrap_paired_d, pooled_d


def test_protocol_hash_changes_with_any_rule_and_status_follows_the_seed():
    assert PROTOCOL.hash == Protocol().hash and len(PROTOCOL.hash) == 16
    changed = Protocol(nulls=type(PROTOCOL.nulls)(draws=100))
    assert changed.hash != PROTOCOL.hash
    assert PROTOCOL.status(0) == "exploratory" and PROTOCOL.status(7) == "confirmatory" and PROTOCOL.status(7, "random") == "control"
    # a section with exploration seeds of its own: seed 1 informed the title question's and claim 6's rules, not claims 1-5d's
    assert PROTOCOL.status(1) == "confirmatory" and PROTOCOL.status(1, part="title") == PROTOCOL.status(1, part="claim6") == "exploratory"
    assert PROTOCOL.status(0, part="title") == "exploratory" and PROTOCOL.status(3, part="title") == "confirmatory"
    assert PROTOCOL.nulls.draws >= 100  # a 95% band from fewer draws is not a 95% band


def test_layer_band_of_the_default_model():
    assert LayerBand().layers(30) == list(range(8, 29))
    assert LayerBand().layers(4) == [1, 2]


def test_max_over_band_finds_a_planted_layer_and_not_noise():
    rng = np.random.default_rng(0)
    null = rng.standard_normal((400, 12))
    planted = rng.standard_normal(12)
    planted[7] += 6.0
    res = nulls.max_over_band(planted, null, "greater")
    assert res["index"] == 7 and res["p"] < 0.01
    # pure noise, many times: the family-wise p rejects at about the nominal rate, not more
    rejections = [nulls.max_over_band(rng.standard_normal(12), null, "greater")["p"] < 0.05 for _ in range(300)]
    assert np.mean(rejections) < 0.09
    # the per-layer (unselected) test on the same noise rejects far more often: selection is what the max corrects
    per_layer = [np.min([nulls.empirical_p(x, null[:, j]) for j, x in enumerate(rng.standard_normal(12))]) < 0.05 for _ in range(100)]
    assert np.mean(per_layer) > 0.25


def test_max_over_band_less_side_mirrors_greater():
    rng = np.random.default_rng(1)
    null = rng.standard_normal((200, 5))
    obs = rng.standard_normal(5)
    a, b = nulls.max_over_band(obs, null, "greater"), nulls.max_over_band(-obs, -null, "less")
    assert a["index"] == b["index"] and a["p"] == b["p"] and a["z"] == pytest.approx(-b["z"])


def test_select_then_test_reads_the_other_split_at_the_selected_layer():
    select = np.array([[0.1, -0.9, 0.2], [0.5, 0.4, -0.3]])
    read = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    idx, val = nulls.select_then_test(select, read, "less")
    assert idx.tolist() == [1, 2] and val.tolist() == [2.0, 6.0]


def _examples(n_mazes=60, per_maze=3):
    rows = []
    for m in range(n_mazes):
        for j, kind in enumerate(("mold", "gold", "path")[:per_maze]):
            rows.append({"maze_seed": 1000 + m, "kind": kind, "final_direction": "NESW"[(m + j) % 4], "n_moves": 1})
    return pd.DataFrame(rows)


def test_shuffled_diffs_are_diffs_of_means_under_a_within_strata_relabelling():
    ex = _examples(20)
    acts = np.random.default_rng(2).standard_normal((len(ex), 3, 5))
    labels, strata = ex["kind"].to_numpy(), nuisance_strata(ex)
    out = nulls.shuffled_diffs(acts, labels, strata, ("mold",), 4, seed=3, layers=[1, 2])
    perms = nulls.shuffled_labels(labels, strata, 4, np.random.default_rng([3, 1]))
    for i in range(4):
        assert sorted(perms[i][strata == strata[0]]) == sorted(labels[strata == strata[0]])  # kept within the stratum
        m = perms[i] == "mold"
        want = acts[m, 2].mean(0) - acts[~m, 2].mean(0)
        assert np.allclose(out["mold"][i, 1], want)


def test_covariance_directions_have_the_layers_covariance():
    rng = np.random.default_rng(4)
    mix = rng.standard_normal((6, 6)) * np.array([5, 1, 1, 1, 1, 0.1])
    acts = (rng.standard_normal((500, 6)) @ mix)[:, None, :]
    d = nulls.covariance_directions(acts, 4000, seed=5)[:, 0]
    x = acts[:, 0] - acts[:, 0].mean(0)
    assert np.allclose(np.cov(d.T), x.T @ x / (len(x) - 1), atol=0.15 * np.abs(x.T @ x / len(x)).max())


def test_claim1_parts_are_disjoint_and_cover_every_maze():
    ex = _examples(90)
    parts = maze_parts(ex, seed=0, whitener_fraction=1 / 3)
    stacked = np.stack([parts["W"], parts["A"], parts["B"]])
    assert (stacked.sum(0) == 1).all()  # each example in exactly one part
    for a, b in (("W", "A"), ("W", "B"), ("A", "B")):
        assert not set(ex.maze_seed[parts[a]]) & set(ex.maze_seed[parts[b]])  # no maze in two parts
    assert abs(parts["W"].sum() - len(ex) / 3) <= 3


def test_equal_n_subsamples_each_class():
    ex = _examples(50)
    idx = equal_n(ex, 20, seed=1)
    assert ex.iloc[idx]["kind"].value_counts().to_dict() == {"mold": 20, "gold": 20, "path": 20}


def _claim1_data(signal: float, seed: int, n_mazes=150, layers=4, hidden=16):
    ex = _examples(n_mazes)
    rng = np.random.default_rng(seed)
    acts = rng.standard_normal((len(ex), layers, hidden))
    e = rng.standard_normal(hidden)
    e /= np.linalg.norm(e)
    sign = np.where(ex["kind"] == "gold", 1.0, np.where(ex["kind"] == "mold", -1.0, 0.0))
    acts[:, 2, :] += signal * sign[:, None] * e  # an antiparallel axis at layer 2 only
    return acts, ex


def test_claim1_sees_a_planted_antiparallel_axis_with_a_small_family_wise_p():
    acts, ex = _claim1_data(1.0, seed=6)
    res = claim1_statistics(acts, ex, [1, 2, 3], draws=100, seed=0, whitener_fraction=1 / 3, strata=nuisance_strata(ex))
    raw = res["raw"]
    assert raw["layer"] == 2 and raw["cos_half_b"] < -0.8
    assert all(raw["nulls"][f]["p"] < 0.05 for f in ("shuffled", "covariance", "isotropic"))
    assert res["whitened"]["layer"] == 2


def test_claim1_on_noise_is_not_beyond_the_shuffled_null():
    acts, ex = _claim1_data(0.0, seed=7)
    raw = claim1_statistics(acts, ex, [1, 2, 3], draws=100, seed=0, whitener_fraction=1 / 3, strata=nuisance_strata(ex))["raw"]
    # three signal-free balanced classes give cos near -0.5; the shuffled null sees the same
    assert raw["nulls"]["shuffled"]["p"] > 0.05 and raw["nulls"]["covariance"]["p"] > 0.05
    assert raw["nulls"]["shuffled"]["median"] == pytest.approx(-0.5, abs=0.15)


def test_pooled_d_and_paired_bootstrap_on_a_known_case():
    state = np.repeat(np.arange(40), 2)
    kinds = np.tile(["gold", "mold"], 40)
    rng = np.random.default_rng(8)
    p = rng.standard_normal(80) + np.where(kinds == "gold", 2.0, 0.0)
    d = pooled_d(p, kinds, "gold")
    assert d == pytest.approx((p[kinds == "gold"].mean() - p[kinds == "mold"].mean())
                              / np.sqrt((p[kinds == "gold"].var(ddof=1) + p[kinds == "mold"].var(ddof=1)) / 2))
    assert pooled_d(p, kinds, "mold") == pytest.approx(-d)
    boots = bootstrap_paired_d({("trained", "gold"): p, ("naive", "gold"): p * 0 + rng.standard_normal(80)}, kinds, state, 500, 0)
    lo, hi = np.percentile(boots[("trained", "gold")], [2.5, 97.5])
    assert lo < d < hi and lo > 1.0
    assert abs(np.median(boots[("naive", "gold")])) < 0.5


def test_paired_tracking_prompts_cannot_tell_the_outcomes_apart(tiny):
    from probes.tracking import paired_tracking_texts

    _, tok = tiny
    texts, kinds, strata, state = paired_tracking_texts(tok, {"max_moves": 2}, 12, seed=3)
    assert len(texts) == 24 and (kinds[0::2] == "gold").all() and (kinds[1::2] == "mold").all()
    for i in range(12):
        g, m = texts[2 * i], texts[2 * i + 1]
        assert state[2 * i] == state[2 * i + 1] == i
        # the same rendered prompt (and earlier moves); only the final direction letter differs
        assert g[:-1] == m[:-1] and g[-1] != m[-1] and g[-1] in "NESW" and m[-1] in "NESW"
