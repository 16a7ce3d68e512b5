"""Mechanics measurements on tiny models: gating on a ReLU MLP, KL and CKA of identical models,
anatomy of a known delta, and the one-step probe's scaling, replay and restore."""

import copy

import numpy as np
import pytest
import torch

from envs import MazeConfig
from mechanics import anatomy, drift, gating, onestep, recruitment
from mechanics.examples import ON_TARGET, maze_examples, off_target_examples
from training.rollout import rollout

MAZE = MazeConfig(size=12)


def _llama(act: str, mlp_bias: bool = False, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=12, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=1, hidden_act=act, mlp_bias=mlp_bias, max_position_embeddings=64)
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg).eval()


def _lm_loss(model, ids, mask=None):
    out = model(input_ids=ids, attention_mask=mask, use_cache=False)
    return out.logits.float().logsumexp(-1).sum() - out.logits[..., 3].sum()


def test_relu_closed_units_get_no_gradient():
    model = _llama("relu", mlp_bias=True)
    mlp = model.model.layers[0].mlp
    with torch.no_grad():  # unit 0 of block 0 is closed at every token; unit 1 open at every token
        mlp.gate_proj.weight[:2] = 0.0
        mlp.gate_proj.bias[0], mlp.gate_proj.bias[1] = -5.0, 5.0
    ids = torch.randint(0, 40, (3, 7))
    with gating.GateRecorder(model) as rec:
        _lm_loss(model, ids).backward()
    assert np.all(rec.sums["units_closed"] > 0)
    assert np.all(rec.sums["mass_in_closed"] == 0) and np.all(rec.sums["mass_out_closed"] == 0)  # exactly zero
    assert np.all(rec.sums["slope_closed"] == 0)
    assert np.all(rec.sums["mass_in"] > 0)
    assert np.all(rec.shares()["gating_ratio"] == 0)
    assert torch.all(mlp.gate_proj.weight.grad[0] == 0) and torch.all(mlp.up_proj.weight.grad[0] == 0)
    assert torch.all(mlp.down_proj.weight.grad[:, 0] == 0)
    assert mlp.gate_proj.weight.grad[1].abs().sum() > 0  # the open unit learns


def test_one_token_masses_equal_the_weight_gradient_norms():
    """With one token the per-token rank-one term is the whole gradient: the recorder's masses are its row/column norms."""
    model = _llama("silu")
    with gating.GateRecorder(model) as rec:
        _lm_loss(model, torch.tensor([[5]])).backward()
    for layer, block in enumerate(model.model.layers):
        m = block.mlp
        rows = m.gate_proj.weight.grad.norm(dim=1) + m.up_proj.weight.grad.norm(dim=1)
        cols = m.down_proj.weight.grad.norm(dim=0)
        assert rec.sums["mass_in"][layer] == pytest.approx(float(rows.sum()), rel=1e-4)
        assert rec.sums["mass_out"][layer] == pytest.approx(float(cols.sum()), rel=1e-4)
        assert rec.sums["units"][layer] == 12


def test_recorder_ignores_padding_and_no_grad_forwards():
    model = _llama("silu")
    ids = torch.randint(0, 40, (2, 6))
    mask = torch.tensor([[1] * 6, [1] * 3 + [0] * 3])
    with gating.GateRecorder(model) as rec:
        with torch.no_grad():
            model(input_ids=ids, attention_mask=mask)
        assert np.all(rec.sums["units"] == 0)
        _lm_loss(model, ids, mask).backward()
    assert np.all(rec.sums["units"] == 9 * 12)  # 9 real tokens x 12 units
    assert not model.model.layers[0].mlp._forward_hooks  # hooks removed


@pytest.fixture(scope="module")
def sets(lm):
    _, tok = lm
    return {ON_TARGET: maze_examples(tok, 2, maze_config=MAZE, n_moves=2), **off_target_examples(tok, 2)}


def test_examples_read_the_action_positions(lm, sets):
    _, tok = lm
    for e in sets[ON_TARGET]:
        assert len(e.positions) == 2
        assert all(tok.decode([e.ids[p + 1]]) in "NESW" for p in e.positions[:-1])  # the next token is a direction letter
    assert set(sets) == {ON_TARGET, "neutral", "self_report", "instructions", "refusal"}
    assert all(len(v) == 2 for v in sets.values())


def test_drift_identical_models_zero_and_perturbed_positive(lm, sets):
    model, tok = lm
    table, summary = drift.drift(model, copy.deepcopy(model), tok, sets, n_boot=50)
    assert np.allclose(table["kl"], 0.0, atol=1e-10)
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.model.layers[1].mlp.down_proj.weight.mul_(1.5)
    table, summary = drift.drift(model, other, tok, sets, n_boot=50)
    assert (table["kl"] > 0).all()
    r = summary["ratio_off_to_on"]
    means = table.groupby("set")["kl"].mean()
    assert r["value"] == pytest.approx(np.mean([means[s] for s in means.index if s != ON_TARGET]) / means[ON_TARGET])
    assert r["ci_lo"] <= r["value"] <= r["ci_hi"]
    assert set(summary["ratio_off_to_on_by_set"]) == {"neutral", "self_report", "instructions", "refusal"}


def test_position_logits_equal_the_full_forward(lm, sets):
    model, tok = lm
    ex = sets["neutral"]
    got = drift.position_logits(model, ex)
    for e, g in zip(ex, got):
        with torch.no_grad():
            full = model(input_ids=torch.tensor([e.ids])).logits[0, list(e.positions)]
        assert torch.allclose(g, full, atol=1e-4)


def test_cka_of_identical_models_is_one(lm, sets):
    model, _ = lm
    acts = recruitment.action_activations(model, sets[ON_TARGET], [0, 2, 3])
    assert acts.shape == (4, 3, model.config.hidden_size)
    t = recruitment.cka_per_layer(acts, acts.copy(), [0, 2, 3])
    assert np.isnan(t["cka"][0])  # layer 0 is the embedding of the same token at every read position: constant
    assert np.allclose(t["cka"][1:], 1.0)


def test_anatomy_of_a_rank_one_delta(tiny):
    model, _ = tiny
    start = anatomy.state_dict_float32(model)
    trained = {k: v.clone() for k, v in start.items()}
    name = "model.layers.2.mlp.up_proj.weight"
    trained[name] += 1e-2 * torch.outer(torch.randn(trained[name].shape[0]), torch.randn(trained[name].shape[1]))
    table = anatomy.matrix_table(start, trained, top_k=4).set_index("name")
    assert table.loc[name, "effective_rank"] == pytest.approx(1.0, abs=1e-3)
    assert table.loc[name, "sparsity@0"] < 0.01
    untouched = table.drop(index=name)
    assert (untouched["relative_change"] == 0).all() and (untouched["sparsity@0"] == 1).all()
    assert (untouched["effective_rank"].dropna() == 0).all()
    s = anatomy.anatomy_summary(table.reset_index())
    assert s["depth_spread"] == pytest.approx(0.25)  # all of the delta in one of 4 blocks
    assert set(s["relative_change_by_layer"]) == {0, 1, 2, 3} and s["relative_change_by_layer"][2] > 0
    with pytest.raises(ValueError):
        anatomy.matrix_table(start, {k: v for k, v in trained.items() if k != name})


def test_matched_eta_secant_and_guards():
    eta, got = onestep.matched_eta(1.0, 0.1, lambda e: 0.05 * e, refine=1)  # linear: one secant step is exact
    assert eta == pytest.approx(2.0) and got == pytest.approx(0.1)
    eta, got = onestep.matched_eta(1.0, 0.1, lambda e: 0.1 * e - 0.2 * e * e, refine=1)  # overshoot: keep the closer
    assert got == pytest.approx(-0.1) or abs(got - 0.1) <= 0.2
    assert all(np.isnan(onestep.matched_eta(-1.0, 0.1, lambda e: e)))
    assert onestep.is_matched(0.11, 0.1) and not onestep.is_matched(0.2, 0.1) and not onestep.is_matched(float("nan"), 0.1)


def test_scripted_labels_replay_the_rollout_states(lm):
    model, tok = lm
    cfg = MazeConfig(size=12, n_moves=3, wind_prob=0.5)
    eps = rollout(model, tok, cfg, [3, 4], group_size=2, seed=1)
    labels = onestep.scripted_labels(eps, cfg)
    assert labels.shape == (4, 3) and labels.min() >= 0 and labels.max() <= 3
    eps[0].neighbours[1] = (9, 9, 9, 9)
    with pytest.raises(RuntimeError):
        onestep.scripted_labels(eps, cfg)


def test_one_step_probe_matches_the_change_and_restores_the_model(lm, sets):
    model, tok = lm
    model = copy.deepcopy(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    steps, gates = onestep.one_step_probe(model, tok, sets, MAZE, n_batches=2, n_mazes=2, group_size=2, n_moves=2, delta=0.01, refine=2)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert set(steps["kind"]) == {"rl", "sft"} and len(steps) == 4
    sft = steps[steps["kind"] == "sft"]
    assert sft["matched"].all() and np.allclose(sft["target_change"], 0.01, rtol=0.25)
    matched = steps[steps["matched"]]
    assert (matched["kl_off"] > 0).all() and (matched["kl_maze"] > 0).all()
    assert steps.loc[~steps["matched"], "kl_off"].isna().all()
    assert len(gates) == 2 * 2 * model.config.num_hidden_layers
    assert ((gates["unit_share"] > 0) & (gates["unit_share"] < 1)).all()
    assert (steps["dot_grad_target"] > 0).all()  # "own" currency: every step rises to first order
    s = onestep.probe_summary(steps, gates, n_boot=50)
    assert s["gating"]["rl"]["gating_ratio"]["n"] == 2
    assert np.isfinite(s["rl_minus_sft_gating"]["value"])
    scripted, _ = onestep.one_step_probe(model, tok, sets, MAZE, n_batches=1, n_mazes=2, group_size=2, n_moves=2, delta=0.01, match="scripted")
    assert (scripted["match"] == "scripted").all()
    assert scripted.loc[scripted["kind"] == "sft", "dot_grad_target"].iloc[0] == pytest.approx(
        steps.loc[(steps["kind"] == "sft") & (steps["batch"] == 0), "dot_grad_target"].iloc[0])  # SFT's target is the same either way
    with pytest.raises(ValueError):
        onestep.one_step_probe(model, tok, sets, MAZE, n_batches=1, match="other")
