"""Pure statistics of the mechanics package against hand-computed values."""

import math

import numpy as np
import pytest
import torch

from mechanics import anatomy, divergence, gating, hypotheses, recruitment


def test_kl_rows_hand_values_and_identity():
    p = torch.log(torch.tensor([[0.5, 0.5], [0.9, 0.1]], dtype=torch.float64))
    q = torch.log(torch.tensor([[0.25, 0.75], [0.9, 0.1]], dtype=torch.float64))
    kl = divergence.kl_rows(p, q)
    assert kl[0].item() == pytest.approx(0.5 * math.log(2) + 0.5 * math.log(2 / 3), abs=1e-12)
    assert kl[1].item() == 0.0
    logits = torch.randn(3, 50)
    assert torch.allclose(divergence.kl_rows(logits, logits + 7.0), torch.zeros(3, dtype=torch.float64), atol=1e-12)  # a shift is irrelevant


def test_effective_rank():
    u, v = torch.randn(6, 1), torch.randn(1, 4)
    assert anatomy.effective_rank(u @ v) == pytest.approx(1.0)
    assert anatomy.effective_rank(torch.eye(5)) == pytest.approx(5.0)
    assert anatomy.effective_rank(torch.tensor([3.0, 3.0, 0.0])) == pytest.approx(2.0)
    assert anatomy.effective_rank(torch.zeros(3, 3)) == 0.0
    assert 1.0 < anatomy.effective_rank(torch.tensor([2.0, 1.0])) < 2.0  # unequal values: less than the rank


def test_principal_angles():
    a = torch.randn(8, 3)
    assert torch.allclose(anatomy.principal_angles(a, a @ torch.randn(3, 3)), torch.zeros(3, dtype=torch.float64), atol=1e-6)  # same span
    e = torch.eye(3)
    assert torch.allclose(anatomy.principal_angles(e[:, :1], e[:, 1:2]), torch.tensor([math.pi / 2], dtype=torch.float64))
    diag = torch.tensor([[1.0], [1.0], [0.0]])
    assert anatomy.principal_angles(e[:, :1], diag).item() == pytest.approx(math.pi / 4)
    w = torch.randn(10, 6)
    rot = anatomy.top_subspace_rotation(w, w.clone(), k=3)
    assert rot["left_max_deg"] == pytest.approx(0.0, abs=1e-4) and rot["right_max_deg"] == pytest.approx(0.0, abs=1e-4)


def test_relative_change_sparsity_depth_spread_layer_names():
    assert anatomy.relative_change(torch.eye(2), 2 * torch.eye(2)) == pytest.approx(1.0)
    assert anatomy.relative_change(torch.zeros(2), torch.zeros(2)) == 0.0
    d = torch.tensor([0.0, 1e-6, 1e-3, 0.0])
    assert anatomy.sparsity(d, (0.0, 1e-5)) == {0.0: 0.5, 1e-5: 0.75}
    assert anatomy.depth_spread([1.0, 1.0, 1.0, 1.0]) == pytest.approx(1.0)
    assert anatomy.depth_spread([0.0, 5.0, 0.0, 0.0]) == pytest.approx(0.25)
    assert math.isnan(anatomy.depth_spread([0.0, 0.0]))
    from training.structure import block_index

    assert block_index("model.layers.12.mlp.up_proj.weight") == 12
    assert block_index("base_model.model.transformer.h.3.attn.c_attn.weight") == 3  # GPT-2 under PEFT
    assert block_index("model.decoder.layers.7.fc1.weight") == 7  # OPT
    assert block_index("model.embed_tokens.weight") is None


def test_linear_cka_identity_and_invariances():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 6))
    assert recruitment.linear_cka(x, x) == pytest.approx(1.0)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    assert recruitment.linear_cka(x, 3.0 * x @ q) == pytest.approx(1.0)  # orthogonal transform and isotropic scale
    assert recruitment.linear_cka(x, x + 5.0) == pytest.approx(1.0)  # centred
    y = rng.normal(size=(40, 6))
    assert recruitment.linear_cka(x, y) < 0.5
    assert recruitment.linear_cka(x, x * np.array([10.0, 1, 1, 1, 1, 1])) < 1.0  # not invariant to anisotropic scaling
    with pytest.raises(ValueError):
        recruitment.linear_cka(x, x[:10])


def test_vector_cosines_per_layer():
    v = {"mold": np.array([[1.0, 0.0], [0.0, 1.0]]), "gold": np.array([[1.0, 1.0], [1.0, 0.0]])}
    u = {"mold": np.array([[2.0, 0.0], [1.0, 0.0]]), "gold": np.array([[-1.0, -1.0], [1.0, 0.0]])}
    t = recruitment.vector_cosines(v, u).set_index(["vector", "layer"])["cos"]
    assert t[("mold", 0)] == pytest.approx(1.0) and t[("mold", 1)] == pytest.approx(0.0)
    assert t[("gold", 0)] == pytest.approx(-1.0) and t[("gold", 1)] == pytest.approx(1.0)
    s = recruitment.recruitment_summary(recruitment.vector_cosines(v, u), n_boot=50)
    assert s["min_mean_cos"]["value"] == pytest.approx(0.0)  # layer 1 only: mold 0, gold 1


def test_unit_masses_and_gate_shares_hand_values():
    dz, du = torch.tensor([[1.0, -2.0]]), torch.tensor([[0.5, 0.0]])
    x_norm = torch.tensor([2.0])
    assert torch.equal(gating.input_mass(dz, du, x_norm), torch.tensor([[3.0, 4.0]]))
    assert torch.equal(gating.output_mass(torch.tensor([[-1.0, 3.0]]), torch.tensor([0.5])), torch.tensor([[0.5, 1.5]]))
    sums = {"units": 4, "units_closed": 2, "slope": 2.0, "slope_closed": 0.5, "mass_in": 6.0, "mass_in_closed": 1.0,
            "mass_out": 4.0, "mass_out_closed": 0.0}
    s = gating.gate_shares(sums)
    assert s["unit_share"] == 0.5 and s["slope_share"] == 0.25 and s["mass_share"] == pytest.approx(0.1)
    assert s["gating_ratio"] == pytest.approx(0.2) and s["slope_ratio"] == pytest.approx(0.4)


def test_hypothesis_verdict_rule():
    S, C, I, M = hypotheses.SUPPORTED, hypotheses.CONTRADICTED, hypotheses.INCONCLUSIVE, hypotheses.NOT_MEASURED
    assert hypotheses.verdict(1.2, 1.5, 1.0, hypotheses.ABOVE) == S
    assert hypotheses.verdict(0.5, 0.9, 1.0, hypotheses.ABOVE) == C
    assert hypotheses.verdict(0.9, 1.1, 1.0, hypotheses.ABOVE) == I
    assert hypotheses.verdict(1.0, 1.1, 1.0, hypotheses.ABOVE) == I  # touching the threshold is not excluding it
    assert hypotheses.verdict(0.1, 0.3, 0.5, hypotheses.BELOW) == S
    assert hypotheses.verdict(0.6, 0.7, 0.5, hypotheses.BELOW) == C
    assert hypotheses.verdict(float("nan"), 0.7, 0.5, hypotheses.BELOW) == M
    assert hypotheses.verdict(0.7, 0.7, 0.5, hypotheses.ABOVE) == S  # a point (no CI) is never inconclusive
    with pytest.raises(ValueError):
        hypotheses.verdict(0, 1, 0, "sideways")


def test_hypotheses_evaluate_reads_summaries():
    ids = [h.id for h in hypotheses.HYPOTHESES]
    assert len(ids) == len(set(ids)) and {"H1", "H2", "H3", "H4"} <= set(ids)
    summaries = {"onestep": {"sft_to_rl_off_target_kl": {"value": 3.0, "ci_lo": 2.0, "ci_hi": 4.0}},
                 "anatomy": {"depth_spread": 0.3, "low_rank_test": 0.02}}
    got = {r.id: r for r in hypotheses.evaluate(summaries)}
    assert got["H1"].verdict == hypotheses.SUPPORTED and got["H1"].value == 3.0
    assert got["H3"].verdict == hypotheses.CONTRADICTED and got["H3"].ci_lo == got["H3"].ci_hi == 0.3
    assert got["H4"].verdict == hypotheses.SUPPORTED
    assert got["H2"].verdict == hypotheses.NOT_MEASURED and got["H4b"].verdict == hypotheses.NOT_MEASURED
    assert set(got["H1"].to_dict()) >= {"prediction", "measurement", "threshold", "verdict"}


def test_top_singular_vectors_match_the_svd():
    g = torch.Generator().manual_seed(0)
    s = torch.tensor([9.0, 5.0, 3.0, 1.0, 0.5], dtype=torch.float64)
    for shape in ((7, 5), (5, 7)):
        m, n = shape
        u, _ = torch.linalg.qr(torch.randn(m, 5, generator=g, dtype=torch.float64))
        v, _ = torch.linalg.qr(torch.randn(n, 5, generator=g, dtype=torch.float64))
        w = u @ torch.diag(s) @ v.T
        left, right = anatomy.top_singular_vectors(w, 3)
        assert left.shape == (m, 3) and right.shape == (n, 3)
        assert torch.allclose(anatomy.principal_angles(left, u[:, :3]), torch.zeros(3, dtype=torch.float64), atol=1e-6)
        assert torch.allclose(anatomy.principal_angles(right, v[:, :3]), torch.zeros(3, dtype=torch.float64), atol=1e-6)
    rot = anatomy.top_subspace_rotation(w, w @ torch.linalg.qr(torch.randn(7, 7, generator=g, dtype=torch.float64))[0], k=2)
    assert rot["left_max_deg"] == pytest.approx(0.0, abs=1e-4) and rot["right_max_deg"] > 1.0  # rotated rows only


def test_statistic_contrast_on_a_constructed_case_with_a_known_answer():
    """Both arms reach progress 1.0 at their last checkpoint; RL's statistic rises by 0.6 there and SFT's by 0.2, so
    the contrast per unit progress is 0.4. Every maze improves the same way, so the matched level is 1 in every draw."""
    from mechanics.matched import maze_draws, statistic_contrast

    mazes = 30
    rewards = {"rl": np.array([[0.0] * mazes, [0.5] * mazes, [1.0] * mazes]),
               "sft": np.array([[0.0] * mazes, [0.25] * mazes, [1.0] * mazes, [2.0] * mazes])}
    stats = {"rl": np.array([1.0, 1.3, 1.6]), "sft": np.array([1.0, 1.05, 1.2, 1.5])}
    c = statistic_contrast(rewards, stats, maze_draws(mazes, 200, 0))
    assert c["level"] == pytest.approx(1.0) and c["rl_change_per_progress"] == pytest.approx(0.6)
    assert c["sft_change_per_progress"] == pytest.approx(0.2)  # read at progress 1.0, not at SFT's last checkpoint (2.0)
    assert c["value"] == pytest.approx(0.4) and c["ci_lo"] == pytest.approx(0.4) and c["verdict"] == "RL moves it more"
    # noisy mazes: the CI widens around the same answer; arms that do the same are "no difference detected"
    rng = np.random.default_rng(1)
    noisy = {a: r + np.r_[np.zeros((1, mazes)), rng.normal(0, 0.3, (len(r) - 1, mazes))] for a, r in rewards.items()}
    same = statistic_contrast(noisy, {"rl": stats["rl"], "sft": np.array([1.0, 1.15, 1.6, 2.2])}, maze_draws(mazes, 300, 0))  # 0.6 per unit too
    assert same["ci_lo"] < 0 < same["ci_hi"] and same["verdict"] == "no difference detected"
    never = statistic_contrast({"rl": rewards["rl"], "sft": -rewards["sft"]}, stats, maze_draws(mazes, 20, 0))
    assert math.isnan(never["value"]) and never["verdict"] == "not measured"  # SFT never improves: nothing to match


def test_an_arm_that_did_not_learn_leaves_the_contrast_not_measured():
    """RL rises at its first checkpoint and falls back: a matched level exists, but its last checkpoint's progress CI
    holds 0, so the protocol's learning gate says not measured (with each arm's progress and CI to show why)."""
    from mechanics.matched import maze_draws, statistic_contrast

    rng = np.random.default_rng(2)
    noise = rng.normal(0, 0.5, (2, 40))
    rewards = {"rl": np.stack([np.zeros(40), 0.5 + noise[0], noise[1] - noise[1].mean()]),
               "sft": np.stack([np.zeros(40), np.full(40, 0.6), np.full(40, 1.0)])}
    c = statistic_contrast(rewards, {"rl": np.array([1.0, 1.5, 1.5]), "sft": np.array([1.0, 1.0, 1.0])}, maze_draws(40, 200, 0))
    assert c["level"] > 0 and np.isfinite(c["value"]) and c["verdict"] == "not measured" and math.isnan(c["ci_lo"])
    learned = c["arms_learned"]
    assert not learned["rl"]["learned"] and learned["rl"]["ci_lo"] < 0 < learned["rl"]["ci_hi"]
    assert learned["sft"]["learned"] and learned["sft"]["progress"] == pytest.approx(1.0)


def test_extraction_draws_widen_the_contrast_ci():
    """The same arms as the known-answer case, with the statistic's extraction noise given per draw: the point value is
    unchanged, and the CI now holds the spread of the statistic (here wide enough to hold 0)."""
    from mechanics.matched import maze_draws, statistic_contrast

    mazes, n_boot = 30, 400
    rewards = {"rl": np.array([[0.0] * mazes, [1.0] * mazes]), "sft": np.array([[0.0] * mazes, [1.0] * mazes])}
    stats = {"rl": np.array([1.0, 1.2]), "sft": np.array([1.0, 1.1])}
    draws = maze_draws(mazes, n_boot, 0)
    fixed = statistic_contrast(rewards, stats, draws)
    assert fixed["value"] == pytest.approx(0.1) and fixed["ci_lo"] == pytest.approx(0.1)  # no maze noise: a point
    rng = np.random.default_rng(3)
    stat_draws = {a: v[None] + np.c_[np.zeros(n_boot), rng.normal(0, 0.2, n_boot)] for a, v in stats.items()}
    noisy = statistic_contrast(rewards, stats, draws, stat_draws)
    assert noisy["value"] == pytest.approx(0.1) and noisy["ci_lo"] < 0 < noisy["ci_hi"]
    assert noisy["verdict"] == "no difference detected" and "extraction" in noisy["resampled"]


def test_resampled_axes_of_a_noiseless_extraction_are_exact():
    """Each class's examples identical: every trajectory draw gives the same vectors, v_Mold = -v_Gold (antiparallelism 1,
    alignment with itself 1); with within-class noise the draws spread."""
    from mechanics.matched import _axis_statistics, _class_counts, _resampled_axes, _unit_axis

    n, layers, hidden = 6, 3, 4
    labels = np.repeat(np.array(["mold", "gold", "path"]), n)
    e1 = np.zeros(hidden)
    e1[0] = 1.0
    acts = np.concatenate([np.tile(e1, (n, layers, 1)), np.tile(-e1, (n, layers, 1)), np.zeros((n, layers, hidden))]) + 5.0
    counts = _class_counts(labels, 50, 0)
    axes = _resampled_axes(acts, labels, counts, [1, 2])
    assert axes["mold"].shape == (50, 2, hidden) and np.allclose(axes["mold"][..., 0], 1.0) and np.allclose(axes["gold"][..., 0], -1.0)
    st = _axis_statistics(**axes, start_axis=_unit_axis(axes))
    assert np.allclose(st["antiparallelism"], 1.0) and np.allclose(st["alignment_with_start_axis"], 1.0)
    noisy = acts + np.random.default_rng(0).normal(0, 0.5, acts.shape)
    spread = _axis_statistics(**_resampled_axes(noisy, labels, counts, [1, 2]), start_axis=_unit_axis(axes))
    assert spread["antiparallelism"].std() > 0.01


def test_recruitment_counts_null_directions_at_least_as_aligned():
    from mechanics.matched import recruitment_against_nulls

    ref = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    delta = np.array([[2.0, 0.0, 0.0], [0.0, 1.0, 1.0]])  # cos 1 and 1/sqrt(2): mean 0.854
    nulls_ = {"toy": np.array([ref, -ref, np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])])}  # mean cos 1, -1, 0
    r = recruitment_against_nulls(delta, ref, nulls_)
    assert r["cos"] == pytest.approx((1 + 2 ** -0.5) / 2) and r["nulls"]["toy"]["p"] == pytest.approx(2 / 4)
    # a layer the update never touched (LoRA on the top blocks) is left out, for the observed change and the nulls alike
    frozen = np.stack([delta[0], np.zeros(3)])
    r = recruitment_against_nulls(frozen, ref, nulls_)
    assert r["cos"] == pytest.approx(1.0) and r["layers_moved"] == 1 and r["nulls"]["toy"]["p"] == pytest.approx(2 / 4)


def test_rounding_never_makes_the_start_look_like_progress():
    """Resampled mazes: the start row's progress is exactly 0, so an arm that only gets worse has no matched level
    and the contrast is not measured, with no CI from resamples."""
    from mechanics.matched import maze_draws, statistic_contrast

    rng = np.random.default_rng(0)
    start = rng.normal(0, 1, 64) / 3  # means whose two reductions differ in the last bit
    rewards = {"rl": np.stack([start, start + 0.2, start + 0.3]), "sft": np.stack([start, start - 0.4, start - 0.8])}
    c = statistic_contrast(rewards, {"rl": np.array([1.0, 1.1, 1.2]), "sft": np.array([1.0, 0.9, 0.8])}, maze_draws(64, 200, 0))
    assert math.isnan(c["value"]) and math.isnan(c["ci_lo"]) and c["n_valid_boot"] == 0 and c["verdict"] == "not measured"


def test_depth_spread_over_the_blocks_training_could_change():
    # LoRA on the top 2 of 4 blocks, mass spread evenly over both: every trainable block carries it (1.0), not 2/4
    assert anatomy.depth_spread([0.0, 0.0, 3.0, 3.0], trainable=2) == pytest.approx(1.0)
    assert anatomy.depth_spread([0.0, 0.0, 3.0, 3.0]) == pytest.approx(0.5)
    assert anatomy.depth_spread([0.0, 0.0, 0.0, 6.0], trainable=2) == pytest.approx(0.5)
