"""The layer steering screen (steering/screen.py) on the tiny model: caching, scaling, readouts, summaries."""


import numpy as np
import pandas as pd
import pytest
import torch

from steering.screen import (
    ScreenConfig,
    _prefix_cache,
    _prepare,
    _run_rows,
    best_layers,
    random_directions,
    readout_tokens,
    residual_norms,
    screen,
    screen_items,
    screen_layer,
    summarize_screen,
)
from steering.steerer import Steerer
from training.structure import block_hidden, cache_kwargs, decoder_layers

LAYER = 2
CFG = ScreenConfig(ratios=(0.25, 0.5), n_prompts=3)


def test_items_steer_header_and_stem_only(tiny):
    _, tok = tiny
    items = screen_items(tok, CFG)
    assert [it.readout for it in items] == ["sentiment"] * 3 + ["compliance"] * 3
    for it in items:
        steered = tok.decode([i for i, m in zip(it.ids, it.steer_mask) if m])
        user = tok.decode(list(it.ids[: it.n_prefix]))
        assert steered == ("<|im_start|>assistant\nI feel" if it.readout == "sentiment" else "<|im_start|>assistant\n")
        assert it.text in user and "assistant" not in user


def test_readout_token_sets_are_distinct(tiny):
    _, tok = tiny
    for readout in ("sentiment", "compliance"):
        t = readout_tokens(tok, CFG, readout)
        assert t.positive_ids and t.negative_ids
        assert not set(t.positive_ids) & set(t.negative_ids)
        assert len(set(t.positive_ids)) == len(t.positive_ids) and len(set(t.negative_ids)) == len(t.negative_ids)


def test_cached_path_equals_full_forward(lm):
    model, tok = lm
    dirs = random_directions(64, 3, seed=1)
    cached = screen_layer(model, tok, LAYER, dirs, CFG)
    full = screen_layer(model, tok, LAYER, dirs, ScreenConfig(ratios=CFG.ratios, n_prompts=CFG.n_prompts, use_cache=False))
    assert len(cached) == 3 * 2 * 2 * 6  # directions x ratios x signs x prompts
    assert np.abs(cached["logodds"].to_numpy() - full["logodds"].to_numpy()).max() < 1e-4
    assert np.abs(cached["logodds_unsteered"].to_numpy() - full["logodds_unsteered"].to_numpy()).max() < 1e-4
    assert cached["delta"].abs().max() > 1e-2  # steering moves the readouts, so the comparison means something
    # the unsteered value is a plain forward without any hook
    item = screen_items(tok, CFG)[0]
    t = readout_tokens(tok, CFG, item.readout)
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([item.ids])).logits[0, -1], -1)
    plain = float(torch.logsumexp(logp[list(t.positive_ids)], 0) - torch.logsumexp(logp[list(t.negative_ids)], 0))
    assert abs(cached["logodds_unsteered"].iloc[0] - plain) < 1e-5


def test_batch_of_conditions_smaller_than_grid(lm):
    model, tok = lm
    dirs = random_directions(64, 2, seed=2)
    a = screen_layer(model, tok, LAYER, dirs, CFG)
    b = screen_layer(model, tok, LAYER, dirs, ScreenConfig(ratios=CFG.ratios, n_prompts=CFG.n_prompts, batch_size=3))
    assert np.abs(a["logodds"].to_numpy() - b["logodds"].to_numpy()).max() < 1e-5


def test_ratio_zero_is_exactly_unsteered(lm):
    model, tok = lm
    df = screen_layer(model, tok, LAYER, random_directions(64, 2, seed=3), ScreenConfig(ratios=(0.0, 0.5), n_prompts=2))
    zero = df[df["ratio"] == 0]
    assert len(zero) and (zero["logodds"] == zero["logodds_unsteered"]).all() and (zero["norm"] == 0).all()
    assert (df[df["ratio"] == 0.5]["delta"] != 0).all()
    # and a zero delta through the steering hook changes nothing, bit for bit
    item = screen_items(tok, CFG)[0]
    t = readout_tokens(tok, CFG, item.readout)
    prefix = _prefix_cache(model, item)
    assert torch.equal(_run_rows(model, item, prefix, None, LAYER, t), _run_rows(model, item, prefix, torch.zeros(1, 64), LAYER, t))


def test_applied_delta_has_norm_ratio_times_mean_norm(lm):
    model, tok = lm
    cfg = ScreenConfig(ratios=(0.25, 0.5), n_prompts=2)
    v = torch.randn(64, generator=torch.Generator().manual_seed(4)) * 7.0  # not unit: the screen normalises it
    unit = v / v.norm()
    seen = []
    hook = decoder_layers(model)[LAYER].register_forward_hook(
        lambda m, args, kwargs, out: seen.append(block_hidden(args, kwargs).detach().clone()), with_kwargs=True
    )
    try:
        df = screen_layer(model, tok, LAYER, {"v": v}, cfg)
    finally:
        hook.remove()
    items = screen_items(tok, cfg)
    mean_norm = df["mean_norm"].iloc[0]
    # mean norm: unsteered input of block LAYER, pooled over the assistant positions of all screen prompts
    with torch.no_grad():
        hs = [model(input_ids=torch.tensor([it.ids]), output_hidden_states=True).hidden_states[LAYER][0] for it in items]
    pooled = torch.cat([h[it.n_prefix :] for h, it in zip(hs, items)]).norm(dim=-1).mean()
    assert mean_norm == pytest.approx(float(pooled), rel=1e-5)
    assert residual_norms(model, tok, items, [LAYER])[0] == pytest.approx(mean_norm, rel=1e-9)
    assert np.allclose(df["norm"], df["ratio"] * mean_norm)
    steered = [s for s in seen if s.shape[0] == 4]  # the batch of 2 ratios x 2 signs, one per prompt
    assert len(steered) == len(items)
    expected = torch.tensor([s * r * mean_norm for r in cfg.ratios for s in (1, -1)], dtype=torch.float32)
    for s, h, it in zip(steered, hs, items):
        delta = s - h[it.n_prefix :][None]  # [rows, assistant positions, hidden]
        assert torch.allclose(delta.norm(dim=-1), expected.abs()[:, None].expand(-1, delta.shape[1]), rtol=1e-4)
        assert torch.allclose(delta, expected[:, None, None] * unit, atol=1e-4)


def test_user_positions_are_not_steered(lm):
    model, tok = lm
    item = screen_items(tok, CFG)[0]
    from transformers import DynamicCache

    def kv(vector):
        ids = torch.tensor([item.ids])
        cache = DynamicCache(config=model.config)
        with torch.no_grad(), Steerer(model, vector, LAYER, 5.0) as s:
            s.set_prefill_mask(torch.tensor([item.steer_mask]))
            model(input_ids=ids, use_cache=True, **cache_kwargs(model, cache))
        return [(layer.keys, layer.values) for layer in cache.layers]

    a, b = kv(torch.randn(64, generator=torch.Generator().manual_seed(5))), kv(torch.randn(64, generator=torch.Generator().manual_seed(6)))
    prefix = _prefix_cache(model, item)
    n = item.n_prefix
    for (ka, va), (kb, vb), layer in zip(a, b, prefix.layers):
        assert torch.allclose(ka[..., :n, :], kb[..., :n, :], atol=1e-5) and torch.allclose(va[..., :n, :], vb[..., :n, :], atol=1e-5)
        assert torch.allclose(ka[..., :n, :], layer.keys, atol=1e-5) and torch.allclose(va[..., :n, :], layer.values, atol=1e-5)
    assert not torch.allclose(a[-1][0][..., n:, :], b[-1][0][..., n:, :], atol=1e-3)  # assistant positions are steered
    # the stored prefix cache is never extended by the screen's forwards
    prep = _prepare(model, tok, CFG, [LAYER])
    from steering.screen import _screen_prepared

    _screen_prepared(model, LAYER, random_directions(64, 2, 0), CFG, prep)
    assert all(pc.get_seq_length() == it.n_prefix for pc, it in zip(prep.prefix, prep.items))


def test_planted_direction_beats_random(tiny):
    model, tok = tiny
    last = model.config.num_hidden_layers - 1
    cfg = ScreenConfig(ratios=(0.25, 0.5, 1.0, 2.0), n_prompts=4, readouts=("sentiment",))
    t = readout_tokens(tok, cfg, "sentiment")
    w_u, gain = model.lm_head.weight.detach(), model.model.norm.weight.detach()
    planted = (w_u[list(t.positive_ids)].mean(0) - w_u[list(t.negative_ids)].mean(0)) * gain
    randoms = random_directions(64, 10, seed=0)
    dirs = {"planted": planted, "anti": -planted, **randoms}
    df = screen(model, tok, [last - 1, last], {last - 1: dirs, last: dirs}, cfg, progress=False)
    at_last = df[(df["layer"] == last) & (df["direction"] == "planted")]
    for _, g in at_last.groupby("prompt_id"):
        curve = [g["logodds_unsteered"].iloc[0]] + list(g.sort_values("signed_ratio")["logodds"])
        curve = sorted(zip([0.0] + list(g.sort_values("signed_ratio")["signed_ratio"]), curve))
        assert np.all(np.diff([c[1] for c in curve]) > 0)  # monotone in r, up for +r, down for -r
    summary = summarize_screen(df)
    row = summary[(summary["layer"] == last) & (summary["direction"] == "planted")].iloc[0]
    assert row["effect"] > row["random_hi"] and row["random_pct"] == 100.0 and row["beats_random"] == 1 and row["n_random"] == 10
    assert row["ci_lo"] > 0
    anti = summary[(summary["layer"] == last) & (summary["direction"] == "anti")].iloc[0]
    assert anti["beats_random"] == -1 and anti["effect"] == pytest.approx(-row["effect"], rel=0.2)
    assert best_layers(summary, "anti", "sentiment", sign=-1, k=1) == best_layers(summary, "planted", "sentiment", sign=1, k=1)
    assert len(best_layers(summary, "planted", "sentiment", k=2)) == 2


def test_random_directions_are_seeded_unit_and_shared():
    a, b, c = random_directions(32, 10, 0), random_directions(32, 10, 0), random_directions(32, 10, 1)
    assert list(a) == [f"random_{i}" for i in range(10)]
    assert all(torch.equal(a[k], b[k]) for k in a) and not torch.equal(a["random_0"], c["random_0"])
    assert all(abs(float(v.norm()) - 1) < 1e-6 for v in a.values())
    assert random_directions(32, 3, 0)["random_2"].equal(a["random_2"])  # draw i does not depend on n


def test_summarize_effect_is_slope_per_unit_ratio():
    rows = []
    slopes = {"x": 2.0, **{f"random_{i}": 0.1 * i for i in range(10)}}
    for d, k in slopes.items():
        for p in range(5):
            for r in (0.25, 0.5):
                for s in (1, -1):
                    rows.append({"layer": 0, "direction": d, "readout": "sentiment", "prompt_id": f"p{p}", "ratio": r, "sign": s, "logodds": 1.0 + s * r * k + p})
    summary = summarize_screen(pd.DataFrame(rows)).set_index("direction")
    assert summary.loc["x", "effect"] == pytest.approx(2.0) and summary.loc["x", "effect_r0.25"] == pytest.approx(2.0)
    assert summary.loc["x", "ci_lo"] == pytest.approx(2.0) and summary.loc["x", "random_pct"] == 100.0
    assert summary.loc["random_5", "random_pct"] == pytest.approx(100 * 5 / 9)  # among the 9 other random directions
    assert summary.loc["random_0", "beats_random"] == -1 and summary.loc["x", "beats_random"] == 1
    with pytest.raises(ValueError, match="no rows"):
        best_layers(summary.reset_index(), "y", "sentiment")
