"""Teacher-forced sentiment log-odds gradients on the tiny model: finite differences, exactness, positions, batching."""

import numpy as np
import pytest
import torch

from steering.logodds import SENTIMENT_PAIRS, directional_effects, logodds_gradients, residual_norms, scored_sequence, steered_logodds
from steering.prompts import sentiment_prompts
from steering.steerer import Steerer, assistant_char_spans, as_messages, encode_chat
from training.chat import render_chat
from training.structure import decoder_layers

LAYER = 2  # a middle block input of the 4-block tiny model


@pytest.fixture(scope="module")
def prompts():
    ps = sentiment_prompts()
    return [next(p for p in ps if p.kind == k) for k in ("welfare", "tile", "distractor")]  # 3 prompts x 4 pairs = 12 items


@pytest.fixture(scope="module")
def grads(lm, prompts):
    model, tok = lm
    return logodds_gradients(model, tok, prompts, batch_size=8)


def _direction(seed, shape=(64,)):
    return np.random.default_rng(seed).standard_normal(shape)


def test_gradient_matches_finite_difference_through_the_steerer(lm, prompts, grads):
    """Richardson-extrapolated central difference (error O(h^4)) of the Steerer's log-odds vs the gradient.

    Llama's RMSNorm computes in float32 whatever the model dtype, so the log-odds carry ~1e-6 of
    rounding noise and a float64 copy would not help; h = 0.1 alpha keeps noise / h and the h^4
    truncation both near 5e-5 of the largest effect (measured), well inside the 1e-3 tolerance.
    """
    model, tok = lm
    g = grads
    assert g.grads.shape == (12, 4, 64) and g.grads.dtype == np.float64 and len(g.items) == 12
    assert list(g.items.columns) == ["prompt_id", "kind", "pair", "prompt"] and g.layers == [0, 1, 2, 3]
    v, h = _direction(1), 0.1
    dirs = np.zeros((4, 64))
    dirs[LAYER] = v
    effect = directional_effects(g, dirs)[0, LAYER]
    df = steered_logodds(model, tok, prompts, v, LAYER, [-h, h, -h / 2, h / 2], residual_norm=g.residual_norm[LAYER])
    lo = {a: d["logodds"].to_numpy() for a, d in df.groupby("alpha")}
    fd = (4 * (lo[h / 2] - lo[-h / 2]) / h - (lo[h] - lo[-h]) / (2 * h)) / 3
    assert np.abs(effect).max() > 0.1  # the effects are not trivially zero
    np.testing.assert_allclose(effect, fd, rtol=1e-3, atol=1e-3 * np.abs(fd).max())
    assert np.all(directional_effects(g, dirs)[0, [i for i in range(4) if i != LAYER]] == 0)  # zero directions elsewhere


def test_zero_direction_and_alpha_zero_give_the_unsteered_logodds_exactly(lm, prompts):
    model, tok = lm
    g = logodds_gradients(model, tok, prompts, layers=[LAYER])
    zero = steered_logodds(model, tok, prompts, np.zeros(64), LAYER, [0.0, 3.0], residual_norm=g.residual_norm[0])
    alpha0 = steered_logodds(model, tok, prompts, _direction(2), LAYER, [0.0, 3.0])  # residual norm measured inside
    assert np.array_equal(zero["logodds"].to_numpy(), np.tile(g.logodds, 2))
    a0 = alpha0.loc[alpha0.alpha == 0.0]
    assert np.array_equal(a0["logodds"].to_numpy(), g.logodds)
    assert list(a0["prompt_id"]) == list(g.items["prompt_id"]) and list(a0["pair"]) == list(g.items["pair"])
    assert not np.allclose(alpha0.loc[alpha0.alpha == 3.0, "logodds"].to_numpy(), g.logodds)  # alpha 3 does steer
    np.testing.assert_allclose(residual_norms(model, tok, prompts, [LAYER]), g.residual_norm, rtol=1e-12)


def test_direction_orthogonal_to_all_gradients_has_no_effect(grads):
    g = grads
    span = np.linalg.qr(g.grads[:, LAYER, :].T)[0]  # [64, 12] basis of the items' gradients at LAYER
    x = _direction(3)
    ortho = x - span @ (span.T @ x)
    dirs = np.stack([np.tile(x, (4, 1)), np.tile(ortho, (4, 1))])  # D = 2 draws, same direction at every layer
    eff = directional_effects(g, dirs, unit_ratio=0.1)
    assert eff.shape == (2, 4, 12)
    scale = np.abs(eff[0, LAYER]).max()
    assert scale > 1e-3 and np.abs(eff[1, LAYER]).max() < 1e-10 * scale
    assert np.abs(eff[1, LAYER - 1]).max() > 1e-3 * scale  # orthogonal at LAYER only, not at another layer
    # alpha 1 = unit_ratio * residual norm along the unit direction: linear in unit_ratio, blind to the direction's norm
    np.testing.assert_allclose(directional_effects(g, 5.0 * dirs, unit_ratio=0.3), 3 * eff, rtol=1e-12, atol=1e-12 * scale)
    with pytest.raises(ValueError, match="directions must be"):
        directional_effects(g, np.zeros((2, 3, 64)))


def test_batch_size_and_layer_subset_do_not_change_results(lm, prompts):
    model, tok = lm
    one = logodds_gradients(model, tok, prompts, batch_size=1)
    four = logodds_gradients(model, tok, prompts, layers=[1, 3], batch_size=4)
    np.testing.assert_allclose(four.logodds, one.logodds, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(four.grads, one.grads[:, [1, 3]], rtol=1e-4, atol=1e-5 * np.abs(one.grads).max())
    np.testing.assert_allclose(four.residual_norm, one.residual_norm[[1, 3]], rtol=1e-5)
    assert np.abs(one.grads[:, 1]).max() > 0 and np.ptp(one.logodds) > 1  # items differ, so the comparison means something


def test_steered_positions_are_the_assistant_header_and_the_reply(lm):
    model, tok = lm
    prompt = sentiment_prompts()[0]
    text, reply = prompt.text, SENTIMENT_PAIRS[0][0]
    seq = scored_sequence(tok, text, reply)
    prompt_ids, prompt_mask = encode_chat(tok, text)
    reply_ids = tok(reply, add_special_tokens=False)["input_ids"]
    n = len(prompt_ids)
    assert seq.ids == prompt_ids + reply_ids[:-1] and seq.labels[n - 1 :] == reply_ids and set(seq.labels[: n - 1]) == {-100}
    # the prompt's steered tokens are exactly the assistant header the Steerer's span finder locates
    rendered, spans = assistant_char_spans(tok, as_messages(text))
    header = rendered[spans[-1][0] :]
    assert header == render_chat(tok, as_messages(text), add_generation_prompt=True)[len(render_chat(tok, as_messages(text))) :]
    assert tok.decode([t for t, m in zip(prompt_ids, seq.steer[:n]) if m]) == header
    assert not any(seq.steer[: n - sum(prompt_mask)]) and all(seq.steer[n - sum(prompt_mask) :])
    # with this mask the Steerer changes the block input at exactly these positions
    ids, block, seen = torch.tensor([seq.ids]), decoder_layers(model)[LAYER], []

    def capture(_module, args, kwargs):
        seen.append((args[0] if args else kwargs["hidden_states"]).clone())

    with torch.no_grad(), Steerer(model, torch.ones(64), LAYER, 1.0) as steerer:
        handle = block.register_forward_pre_hook(capture, with_kwargs=True)  # after the Steerer's, so it sees the steered input
        try:
            model(input_ids=ids)  # no mask: every position steered
            steerer.set_prefill_mask(torch.tensor([seq.steer]))
            model(input_ids=ids)
        finally:
            handle.remove()
    changed = (seen[1] - seen[0]).abs().amax(-1)[0] > 0  # positions where the masked forward differs from the all-steered one
    assert (~changed).tolist() == seq.steer
    # the unit of alpha: the mean residual norm at the block input over the steered positions of both sequences
    neg = scored_sequence(tok, text, SENTIMENT_PAIRS[0][1])
    with torch.no_grad():
        norms = [model(input_ids=torch.tensor([q.ids]), output_hidden_states=True).hidden_states[LAYER][0].norm(dim=-1)[torch.tensor(q.steer)]
                 for q in (seq, neg)]
    expected = torch.cat(norms).double().mean().item()
    np.testing.assert_allclose(residual_norms(model, tok, [prompt], [LAYER], pairs=SENTIMENT_PAIRS[:1]), [expected], rtol=1e-6)
