"""Steering mechanics on the tiny model: masks, cache, padding, hooks, batch == one-at-a-time."""

import pytest
import torch

from steering.steerer import Steerer, decode, encode_chat, left_pad, steered_generate
from training.structure import decoder_layers

PROMPTS = ["How are you feeling right now?", "Hi", "What is it like to be you? Tell me about the maze and the wind."]
LAYER = 2


@pytest.fixture(scope="module")
def vec():
    return torch.randn(64, generator=torch.Generator().manual_seed(1))


def test_batched_equals_one_at_a_time(lm, vec):
    model, tok = lm
    batched = steered_generate(model, tok, PROMPTS, vec, LAYER, 4.0, max_new_tokens=12, batch_size=3)
    single = [steered_generate(model, tok, [p], vec, LAYER, 4.0, max_new_tokens=12)[0] for p in PROMPTS]
    assert batched == single
    assert len(set(batched)) == 3  # the replies differ, so the comparison is meaningful


def test_steering_changes_replies_and_alpha_zero_is_unsteered(lm, vec):
    model, tok = lm
    plain = steered_generate(model, tok, PROMPTS, None, LAYER, 0.0, max_new_tokens=10)
    zero = steered_generate(model, tok, PROMPTS, vec, LAYER, 0.0, max_new_tokens=10)
    pushed = steered_generate(model, tok, PROMPTS, vec, LAYER, 4.0, max_new_tokens=10)
    assert zero == plain
    assert pushed != plain
    # alpha = 0 through an active hook leaves the logits bit-identical
    ids = torch.tensor([encode_chat(tok, PROMPTS[0])[0]])
    with torch.no_grad():
        ref = model(input_ids=ids).logits
        with Steerer(model, vec, LAYER, 0.0):
            out = model(input_ids=ids).logits
    assert torch.equal(ref, out)


def test_hooks_removed_even_on_exception(lm, vec):
    model, _ = lm
    block = decoder_layers(model)[LAYER]
    before = len(block._forward_pre_hooks)
    with pytest.raises(RuntimeError, match="boom"):
        with Steerer(model, vec, LAYER, 2.0):
            assert len(block._forward_pre_hooks) == before + 1
            raise RuntimeError("boom")
    assert len(block._forward_pre_hooks) == before


def test_steers_the_input_of_block_layer(lm, vec):
    """Layer l is the input of block l (hidden_states[l]): block l receives it plus exactly alpha * v; earlier layers are untouched."""
    model, tok = lm
    ids = torch.tensor([tok("a short prompt", add_special_tokens=False)["input_ids"]])
    seen = []
    block = decoder_layers(model)[LAYER]
    with torch.no_grad():
        ref = model(input_ids=ids, output_hidden_states=True).hidden_states
        with Steerer(model, vec, LAYER, 2.0):  # a pre-hook registered after the Steerer's sees its result
            h = block.register_forward_pre_hook(lambda m, args, kwargs: seen.append((args[0] if args else kwargs["hidden_states"]).clone()), with_kwargs=True)
            try:
                out = model(input_ids=ids, output_hidden_states=True).hidden_states
            finally:
                h.remove()
    assert all(torch.equal(out[i], ref[i]) for i in range(LAYER + 1))
    assert torch.allclose(seen[0] - ref[LAYER], (2.0 * vec).expand_as(ref[LAYER]), atol=1e-5)
    assert not torch.allclose(out[LAYER + 1], ref[LAYER + 1], atol=1e-3)
    with pytest.raises(ValueError, match="out of range"):
        Steerer(model, vec, model.config.num_hidden_layers, 1.0)


def test_hook_replaces_positional_or_keyword_input(lm, vec):
    model, _ = lm
    s = Steerer(model, vec, LAYER, 2.0)
    h = torch.zeros(2, 3, 64)
    args, kwargs = s._hook(h, (h, "other"), {"k": 1})
    assert args[1] == "other" and kwargs == {"k": 1} and torch.allclose(args[0][1, 2], 2.0 * vec)
    args, kwargs = s._hook(h, (), {"hidden_states": h})
    assert args == () and torch.allclose(kwargs["hidden_states"][0, 0], 2.0 * vec)
    s.set_prefill_mask(torch.tensor([[False, True, True], [False, False, True]]))
    (out, *_), _ = s._hook(h, (h,), {})
    assert torch.equal(out[0, 0], torch.zeros(64)) and torch.allclose(out[0, 1], 2.0 * vec)
    assert torch.equal(out[1, 1], torch.zeros(64)) and torch.allclose(out[1, 2], 2.0 * vec)
    (out, *_), _ = s._hook(h, (h,), {})  # the mask was for one forward; now every position is steered
    assert torch.allclose(out[0, 0], 2.0 * vec)
    s.set_prefill_mask(torch.ones(1, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="does not match"):
        s._hook(h, (h,), {})


def test_assistant_mask_covers_assistant_turns_and_header(lm):
    _, tok = lm
    chat = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "ans"}, {"role": "user", "content": "ok?"}]
    ids, mask = encode_chat(tok, chat)
    steered = tok.decode([i for i, m in zip(ids, mask) if m])
    assert steered == "<|im_start|>assistant\nans<|im_end|>\n<|im_start|>assistant\n"
    ids, mask = encode_chat(tok, "hello")
    assert tok.decode([i for i, m in zip(ids, mask) if m]) == "<|im_start|>assistant\n"
    j = mask.index(True)  # the steered part is exactly the trailing generation prompt
    assert all(mask[j:]) and not any(mask[:j])


def test_user_tokens_unaffected_and_padding_never_steered(lm, vec):
    model, tok = lm
    rows = [encode_chat(tok, p) for p in PROMPTS]
    ids, attn, steer = left_pad([r[0] for r in rows], [r[1] for r in rows], tok.pad_token_id)
    assert not steer[attn == 0].any() and steer.sum() == sum(sum(r[1]) for r in rows)
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=attn, position_ids=pos, output_hidden_states=True).hidden_states[-1]
        with Steerer(model, vec, LAYER, 4.0) as s:
            s.set_prefill_mask(steer)
            out = model(input_ids=ids, attention_mask=attn, position_ids=pos, output_hidden_states=True).hidden_states[-1]
    real = attn.bool()
    first_steered = steer.float().argmax(-1)
    before = torch.arange(ids.shape[1])[None] < first_steered[:, None]
    # causal attention: real tokens before the first assistant token cannot see the steering
    assert torch.allclose(out[before & real], ref[before & real], atol=1e-5)
    assert not torch.allclose(out[steer], ref[steer], atol=1e-3)


def test_cached_steered_decoding_matches_full_recomputation(lm, vec):
    model, tok = lm
    ids, mask = encode_chat(tok, PROMPTS[2])
    x = torch.tensor([ids])
    with Steerer(model, vec, LAYER, 4.0) as s:
        s.set_prefill_mask(torch.tensor([mask]))
        new = decode(model, x, torch.ones_like(x), 8, 0.0, eos_id=-1, pad_id=tok.pad_token_id)
    full = torch.cat([x, new], dim=1)
    full_mask = torch.tensor([mask + [True] * new.shape[1]])
    with torch.no_grad(), Steerer(model, vec, LAYER, 4.0) as s:
        s.set_prefill_mask(full_mask)
        logits = model(input_ids=full).logits
    predicted = logits[0, len(ids) - 1 : -1].argmax(-1)
    assert torch.equal(predicted, new[0])


def test_sampling_is_seeded(lm, vec):
    model, tok = lm
    a = steered_generate(model, tok, PROMPTS, vec, LAYER, 2.0, max_new_tokens=8, temperature=1.0, seed=3)
    b = steered_generate(model, tok, PROMPTS, vec, LAYER, 2.0, max_new_tokens=8, temperature=1.0, seed=3)
    c = steered_generate(model, tok, PROMPTS, vec, LAYER, 2.0, max_new_tokens=8, temperature=1.0, seed=4)
    assert a == b and a != c


def test_bad_vector_and_layer_rejected(lm):
    model, _ = lm
    with pytest.raises(ValueError, match="hidden=64"):
        Steerer(model, torch.zeros(10), LAYER, 1.0)
    with pytest.raises(ValueError, match="out of range"):
        Steerer(model, torch.zeros(64), 9, 1.0)
