"""Vector math, separation statistics and the layer rule on synthetic data with a known answer."""

import warnings

import numpy as np
import pytest

from probes.emotion import alignment, denoise_basis, emotion_vectors
from probes.metrics import (
    centred_mean_cosines,
    choose_layer,
    cohens_d,
    cosine,
    cosine_per_layer,
    diff_of_means,
    held_out_projections,
    histogram_overlap,
    null_band,
    separation,
    vectors_from_sums,
)


def test_vectors_from_sums_equals_diff_of_means():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 5))
    labels = np.array(["mold"] * 8 + ["gold"] * 10 + ["path"] * 12)
    sums = {k: x[labels == k].sum(0) for k in ("mold", "gold", "path")}
    counts = {k: int((labels == k).sum()) for k in sums}
    v = vectors_from_sums(sums, counts)
    for k in sums:
        expected = x[labels == k].mean(0) - x[labels != k].mean(0)
        np.testing.assert_allclose(v[k], expected, atol=1e-12)
        np.testing.assert_allclose(diff_of_means(x, labels, k), expected, atol=1e-12)


def test_cohens_d_and_overlap():
    a, b = np.array([1.0, 2.0, 3.0]), np.array([3.0, 4.0, 5.0])
    assert cohens_d(a, b) == pytest.approx(-2.0)  # means differ by 2, pooled SD 1
    assert histogram_overlap(a, a) == pytest.approx(1.0)
    assert histogram_overlap(np.array([0.0, 0.1]), np.array([5.0, 5.1])) == pytest.approx(0.0)
    s = separation(np.array([0.0, 0.1, 1.0, 1.1]), np.array([False, False, True, True]))
    assert s["auroc"] == 1.0 and s["overlap"] == 0.0 and s["abs_d"] > 5


def test_choose_layer_is_floor_of_mean_of_argbests():
    auroc = np.array([0.5, 0.6, 0.9, 0.7, 0.6, 0.5])  # argmax 2
    d = np.array([0.1, 0.2, 0.3, 0.4, 0.9, 0.2])  # argmax 4
    overlap = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.1])  # argmin 5
    assert choose_layer(auroc, d, overlap) == 3  # floor(11 / 3)
    # a tie at chance on the embeddings (layer 0) is not a pick once the rule starts at layer 1
    flat = np.array([0.5, 0.4, 0.45, 0.3, 0.2, 0.1])
    assert choose_layer(flat, np.zeros(6), np.ones(6)) == 0
    assert choose_layer(flat, np.zeros(6), np.ones(6), first_layer=1) == 1
    assert choose_layer(auroc, d, overlap, first_layer=3) == 4  # floor((3 + 4 + 5) / 3)


def test_layer_rule_finds_known_layer_on_synthetic_activations():
    """Class signal strongest at layer 6 of 10: held-out projections must put l* there."""
    from sklearn.model_selection import GroupKFold

    rng = np.random.default_rng(1)
    n, n_layers, hidden = 240, 10, 16
    labels = np.array(["gold", "mold", "path"] * (n // 3))
    strength = np.full(n_layers, 0.2)
    strength[5], strength[6], strength[7] = 0.8, 2.0, 0.8
    direction = rng.normal(size=hidden)
    direction /= np.linalg.norm(direction)
    acts = rng.normal(size=(n, n_layers, hidden))
    acts[labels == "gold"] += strength[None, :, None] * direction
    folds = list(GroupKFold(5).split(acts[:, 0], labels, np.arange(n)))
    metrics = []
    for layer in range(n_layers):
        p = held_out_projections(acts[:, layer], labels, "gold", folds)
        metrics.append(separation(p, labels == "gold"))
    auroc = np.array([m["auroc"] for m in metrics])
    d = np.array([m["abs_d"] for m in metrics])
    overlap = np.array([m["overlap"] for m in metrics])
    assert int(np.argmax(auroc)) == 6 and int(np.argmax(d)) == 6 and int(np.argmin(overlap)) == 6
    assert choose_layer(auroc, d, overlap) == 6


def test_null_band_is_centred_and_narrows_with_dimension():
    lo, hi, cos = null_band(np.ones(3), 2 * np.ones(3), hidden=576, draws=400, seed=0)
    assert cos.shape == (3, 400)
    assert np.all(lo < 0) and np.all(hi > 0)
    assert np.all(hi < 0.15) and np.all(lo > -0.15)  # ~ 2 / sqrt(576) = 0.083
    lo16, hi16, _ = null_band(np.ones(1), np.ones(1), hidden=16, draws=400, seed=0)
    assert hi16[0] > hi[0]


def test_cosine_per_layer_and_centred_means():
    a = np.array([[1.0, 0.0], [1.0, 1.0]])
    np.testing.assert_allclose(cosine_per_layer(a, -a), [-1.0, -1.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a zero row (layer 0's embeddings) is NaN without a RuntimeWarning
        np.testing.assert_allclose(cosine_per_layer(np.array([[0.0, 0.0], [1.0, 0.0]]), a), [np.nan, 1 / np.sqrt(2)])
    c = centred_mean_cosines({"m": np.array([2.0, 0.0]), "g": np.array([0.0, 0.0]), "p": np.array([1.0, 0.0])})
    assert c["m"]["g"] == pytest.approx(-1.0) and c["m"]["m"] == pytest.approx(1.0)


def test_emotion_vectors_denoise_and_alignment():
    rng = np.random.default_rng(2)
    hidden = 20
    noise_dir = np.zeros(hidden)
    noise_dir[0] = 1.0
    neutral = rng.normal(size=(50, hidden)) * 0.1 + rng.normal(size=(50, 1)) * 10 * noise_dir
    basis = denoise_basis(neutral)
    assert basis.shape[0] >= 1 and abs(basis[0, 0]) > 0.99  # the dominant neutral direction
    val_dir = np.zeros(hidden)
    val_dir[1] = 1.0
    valence = {"joy": 1.0, "pride": 0.8, "calm": 0.3, "shame": -0.8, "anger": -0.6, "grief": -1.0}
    acts = {k: v * val_dir + rng.normal(size=(6, hidden)) * 0.05 + 5 * noise_dir for k, v in valence.items()}
    ev = emotion_vectors(acts, basis)
    assert all(abs(e @ basis[0]) < 1e-8 for e in ev.values())  # denoised
    res = alignment(ev, v_gold=val_dir, v_mold=-val_dir, valence=valence)
    assert res["slope"] == pytest.approx(-1.0, abs=1e-6) and res["r"] == pytest.approx(-1.0, abs=1e-6)
    assert res["gold_pole"][0] == "joy" and res["mold_pole"][0] == "grief"
    assert res["pc1_valence_r"] > 0.95 and res["cos_gold_pc1"] > 0.9


def test_three_balanced_classes_without_signal_give_cos_near_minus_half():
    """Why the label-permutation null (not 0) is the baseline for cos(v_mold, v_gold)."""
    from probes.metrics import cos_from_norms, permutation_null_cosines

    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 200))
    labels = np.array(["mold", "gold", "path"] * 100)
    perm = permutation_null_cosines(x, labels, "mold", "gold", draws=60, seed=0)
    assert abs(perm.mean() + 0.5) < 0.05
    v = {k: diff_of_means(x, labels, k) for k in ("mold", "gold", "path")}
    n = {k: np.linalg.norm(v[k], keepdims=True) for k in v}
    assert cos_from_norms(n["mold"], n["gold"], n["path"])[0] == pytest.approx(cosine_per_layer(v["mold"][None], v["gold"][None])[0])


def test_stratified_shuffle_null_is_not_fooled_by_a_nuisance():
    """A huge nuisance (e.g. trajectory length) unbalanced by a plain shuffle drives cos(v_a, v_b) to -1;
    shuffling within strata keeps the balance and gives the isotropic -0.5 of three signal-free classes."""
    from probes.metrics import permutation_null_cosines

    rng = np.random.default_rng(0)
    n, h = 600, 40
    labels = np.repeat(np.array(["mold", "gold", "path"]), n // 3)
    nuisance = np.tile(np.repeat([0, 1], 10), n // 20)  # balanced within every class
    x = rng.standard_normal((n, h))
    x[:, 0] += 50.0 * nuisance
    plain = permutation_null_cosines(x, labels, "mold", "gold", 50, seed=1)
    strat = permutation_null_cosines(x, labels, "mold", "gold", 50, seed=1, strata=nuisance.astype(str))
    assert np.median(plain) < -0.8
    assert -0.7 < np.median(strat) < -0.3


def test_split_half_vectors_centre_out_nuisance_imbalance():
    import pandas as pd

    from probes.layer_choice import layer_metrics

    rng = np.random.default_rng(1)
    n_per, h = 48, 16
    rows, acts = [], []
    signal = {"mold": rng.standard_normal(h), "gold": rng.standard_normal(h), "path": np.zeros(h)}
    for k in ("mold", "gold", "path"):
        for i in range(n_per):
            d, moves = "NESW"[i % 4], 1 + (i // 4) % 2
            rows.append({"kind": k, "maze_seed": 1000 * ("mgp".index(k[0])) + i, "final_direction": d, "n_moves": moves})
            x = signal[k] + 0.3 * rng.standard_normal(h)
            x[0] += 40.0 * moves + 20.0 * "NESW".index(d)  # nuisances far larger than the signal
            acts.append(x)
    acts = np.array(acts)[:, None, :]
    lc = layer_metrics(acts, pd.DataFrame(rows), np.ones((1, h)), folds=3, perm_draws=5, probe=False)
    rel = lc.table[(lc.table.space == "raw") & (lc.table.vector == "mold")]["split_half_cos"].iloc[0]
    assert rel > 0.9  # without centring within strata the halves' opposite nuisance imbalances make this negative
    # the reliability is a mean over random maze splits, within their range; with one split it is the
    # cosine of that split's halves, the ones claim 1's held-out layer choice reads
    row = lc.table[(lc.table.space == "raw") & (lc.table.vector == "gold")].iloc[0]
    assert row.split_half_min <= row.split_half_cos <= row.split_half_max and row.split_half_min < row.split_half_max
    one = layer_metrics(acts, pd.DataFrame(rows), np.ones((1, h)), folds=3, perm_draws=5, probe=False, n_splits=1)
    first = one.table[(one.table.space == "raw") & (one.table.vector == "gold")].iloc[0]
    assert first.split_half_cos == pytest.approx(cosine(one.halves["A"]["gold"][0], one.halves["B"]["gold"][0]), rel=1e-9)
    assert first.split_half_min == first.split_half_max == first.split_half_cos


def test_n_for_reliability_projects_the_one_over_n_noise_by_hand():
    from probes.metrics import n_for_reliability

    # cos 0.5 at N = 300: r = 1, and 0.9 needs r = 1/9, so N = 300 * 9 = 2700; cos 0.9 needs no more.
    assert n_for_reliability(0.5, 300) == pytest.approx(2700)
    assert n_for_reliability(0.9, 300) == pytest.approx(300)
    assert n_for_reliability(-0.1, 300) == float("inf")


def test_n_for_reliability_matches_simulated_difference_of_means():
    from probes.metrics import cosine, n_for_reliability

    rng = np.random.default_rng(0)
    hidden, signal = 200, np.zeros(200)
    signal[0] = 1.0

    def split_half(n):  # n per class, halves of n/2; unit-variance isotropic noise
        v = [rng.normal(0, 1, (n // 2, hidden)).mean(0) + signal - rng.normal(0, 1, (n // 2, hidden)).mean(0) for _ in "AB"]
        return cosine(v[0], v[1])

    c = np.mean([split_half(200) for _ in range(20)])
    n9 = n_for_reliability(c, 200)
    assert 0.85 < np.mean([split_half(int(n9)) for _ in range(20)]) < 0.95


def test_held_out_projections_centred_within_strata_see_a_signal_under_a_large_nuisance():
    """Paired states (three classes per maze, each with its own final letter): the letter is a
    nuisance far larger than the class signal, balanced overall but not within grouped folds."""
    from sklearn.model_selection import GroupKFold

    rng = np.random.default_rng(0)
    h, n_states = 8, 96
    letter = rng.standard_normal((4, h)) * 50.0
    signal = np.zeros(h)
    signal[3] = 1.0
    rows, labels, strata, groups = [], [], [], []
    for s in range(n_states):
        dirs = rng.permutation(4)[:3]
        for k, d in zip(("mold", "gold", "path"), dirs):
            rows.append(letter[d] + (signal if k == "gold" else 0) + 0.3 * rng.standard_normal(h))
            labels.append(k), strata.append(str(d)), groups.append(s)
    x, labels, strata = np.array(rows), np.array(labels), np.array(strata)
    folds = list(GroupKFold(4).split(x, labels, groups))
    is_gold = labels == "gold"
    centred = separation(held_out_projections(x, labels, "gold", folds, strata), is_gold)
    assert centred["auroc"] > 0.95
    plain = separation(held_out_projections(x, labels, "gold", folds), is_gold)
    assert plain["auroc"] < centred["auroc"] - 0.2  # the letter's fold imbalance swamps the signal


def test_tracking_d_is_read_within_final_letters():
    """A letter nuisance not orthogonal to v swamps the pooled d; within letters the outcome shows."""
    from probes.metrics import cohens_d
    from probes.metrics import centre_within

    rng = np.random.default_rng(3)
    h, n = 6, 200
    v = np.zeros(h)
    v[0] = 1.0
    letter_shift = np.array([[20.0, 0, 0, 0, 0, 0], [-20.0, 0, 0, 0, 0, 0], [0, 5.0, 0, 0, 0, 0], [7.0, 0, 0, 0, 0, 0]])
    kinds = np.array(["gold", "mold"] * n)
    strata = np.array([f"{(i // 2) % 4}|1" for i in range(2 * n)])  # both kinds get every letter equally often
    acts = rng.standard_normal((2 * n, h)) * 0.5 + np.array([letter_shift[int(s[0])] for s in strata])
    acts[kinds == "gold", 0] += 1.0
    pooled = cohens_d((acts @ v)[kinds == "gold"], (acts @ v)[kinds == "mold"])
    within = centre_within(acts, strata) @ v
    assert abs(pooled) < 0.2 and cohens_d(within[kinds == "gold"], within[kinds == "mold"]) > 1.5
    # each stratum's mean is zero afterwards, and an [N, 2, H] capture is centred alike
    c = centre_within(np.stack([acts, acts], 1), strata)
    assert np.allclose(c[:, 0], c[:, 1]) and all(np.allclose(c[strata == g].mean(0), 0) for g in np.unique(strata))


def test_antiparallel_ci_brackets_a_known_cosine():
    import pandas as pd

    from probes.channels import Spaces
    from probes.layer_choice import antiparallel_ci

    rng = np.random.default_rng(2)
    n, h = 300, 8
    kinds = np.array(["mold", "gold", "path"] * n)
    acts = rng.standard_normal((3 * n, 1, h)) * 0.3
    acts[kinds == "mold", 0, 0] += 1.0
    acts[kinds == "gold", 0, 0] -= 1.0  # v_mold and v_gold both along channel 0, opposite signs: cos ~ -1
    acts[kinds == "gold", 0, 1] += 0.5  # plus a gold-only part
    # class means mold (1, 0), gold (-1, .5), path 0; v_k = mean_k - mean of the others:
    # v_mold = (1.5, -.25), v_gold = (-1.5, .5), cos = -2.375 / sqrt(2.3125 * 2.5) ~ -0.988
    examples = pd.DataFrame({"kind": kinds, "final_direction": np.arange(3 * n) % 4, "n_moves": 1})
    spaces = Spaces(np.ones((1, h)), np.eye(h)[None])
    lo, hi = antiparallel_ci(acts, examples, spaces, "raw", 0, n_boot=300, seed=0)
    expected = -2.375 / np.sqrt(2.3125 * 2.5)
    assert lo - 0.005 < expected < hi + 0.005 and hi - lo < 0.05
    # a mask restricts the resampling to those examples (half the data: a wider interval)
    lo_h, hi_h = antiparallel_ci(acts, examples, spaces, "raw", 0, mask=np.arange(3 * n) < 3 * n // 2, n_boot=300, seed=0)
    assert hi_h - lo_h > hi - lo


def test_weighted_centred_diffs_equal_centring_each_resample():
    from probes.metrics import centre_within, diff_of_means, weighted_centred_diffs

    rng = np.random.default_rng(5)
    n, h = 60, 7
    labels = np.array(["mold", "gold", "path"] * (n // 3))
    strata = np.array(["U|1", "D|1", "L|2", "R|2", "U|2"])[rng.integers(0, 5, n)]
    x = rng.standard_normal((n, h)) + (labels == "gold")[:, None] * np.arange(h)
    draws = [rng.integers(0, n, n) for _ in range(6)]
    draws.append(np.flatnonzero(strata != "U|2")[rng.integers(0, (strata != "U|2").sum(), n)])  # a stratum absent from the draw
    counts = np.stack([np.bincount(i, minlength=n) for i in draws])
    got = weighted_centred_diffs(x, labels, strata, counts, ("mold", "gold"))
    for b, i in enumerate(draws):
        xc = centre_within(x[i], strata[i])
        for k in ("mold", "gold"):
            np.testing.assert_allclose(got[k][b], diff_of_means(xc, labels[i], k), rtol=1e-10, atol=1e-12)
    # a draw without any gold example has no gold vector (NaN), and its mold vector is still defined
    no_gold = np.bincount(np.flatnonzero(labels != "gold")[:10], minlength=n)[None]
    out = weighted_centred_diffs(x, labels, strata, no_gold, ("mold", "gold"))
    assert np.isnan(out["gold"]).all() and np.isfinite(out["mold"]).all()


def test_permutation_null_equals_shuffling_labels_and_recomputing_each_draw():
    from probes.metrics import cosine, diff_of_means, permutation_null_cosines

    rng = np.random.default_rng(9)
    n, h = 90, 6
    labels = np.array(["mold", "gold", "path"] * (n // 3))
    strata = np.array(["U", "D", "L"])[rng.integers(0, 3, n)]
    x = rng.standard_normal((n, h)) + (labels == "mold")[:, None]
    got = permutation_null_cosines(x, labels, "mold", "gold", draws=20, seed=4, strata=strata)
    # the reference: shuffle within strata draw by draw (same generator, same order) and recompute both means
    ref_rng, want = np.random.default_rng(4), []
    groups = [np.flatnonzero(strata == s) for s in np.unique(strata)]
    for _ in range(20):
        perm = labels.copy()
        for g in groups:
            perm[g] = labels[g][ref_rng.permutation(len(g))]
        want.append(cosine(diff_of_means(x, perm, "mold"), diff_of_means(x, perm, "gold")))
    np.testing.assert_allclose(got, want, rtol=1e-10)
