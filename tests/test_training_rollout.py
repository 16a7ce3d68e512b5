"""Batched KV-cached rollouts: token stream, masking, group sharing, and agreement with a full forward."""

import pytest
import torch

from envs import MazeConfig, good_policy_trajectory
from training.chat import render_chat
from training.forward import direction_logprobs, split_forward_error
from training.rollout import ChatTokens, rollout, unmasked_rollout
from training.sft import episode_from_messages

CFG = MazeConfig(size=12, n_moves=3, wind_prob=0.5)  # much wind: variable-length turns


@pytest.fixture(scope="module")
def played(tiny):
    model, tok = tiny
    eps = rollout(model, tok, CFG, [5, 9], group_size=3, temperature=0.7, seed=3, cache_layer=2)
    return model, tok, eps


def test_incremental_tokens_equal_tokenizing_the_rendered_chat(played):
    _, tok, eps = played
    chat = ChatTokens(tok)
    for ep in eps:
        full = tok(render_chat(tok, ep.messages), add_special_tokens=False)["input_ids"]
        assert full[: len(ep.token_ids)] == ep.token_ids
        assert [ep.token_ids[p] for p in ep.action_positions] == [chat.dir_ids[a] for a in ep.actions]
        assert len(ep.actions) == len(ep.logprobs) == len(ep.rewards) == len(ep.neighbours) == CFG.n_moves
    assert any(w is not None for ep in eps for w in ep.winds)  # wind messages were exercised


def test_group_shares_maze_and_first_prompt(played):
    _, _, eps = played
    for g in range(2):
        group = [ep for ep in eps if ep.group == g]
        assert len({ep.maze_seed for ep in group}) == 1
        assert len({ep.messages[0]["content"] for ep in group}) == 1
        assert len({ep.env_seed for ep in group}) == 3  # independent wind
    assert eps[0].maze_seed != eps[3].maze_seed


def test_masked_logprobs_match_full_vocabulary_forward(played):
    """The rollout's log-probs (KV cache, holes, 4-row head) equal a plain full forward restricted to N/E/S/W."""
    model, tok, eps = played
    chat = ChatTokens(tok)
    for ep in eps:
        ids = torch.tensor([ep.token_ids])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0]
        for a, p, lp in zip(ep.actions, ep.action_positions, ep.logprobs):
            ref = torch.log_softmax(logits[p - 1, chat.dir_ids] / 0.7, -1)[a]
            assert lp == pytest.approx(float(ref), abs=1e-4)


def test_update_forward_matches_rollout_and_split_forward(played):
    model, tok, eps = played
    chat = ChatTokens(tok)
    with torch.no_grad():
        full = direction_logprobs(model, eps, chat.dir_ids, 0.7, 0, tok.pad_token_id)
        split = direction_logprobs(model, eps, chat.dir_ids, 0.7, 2, tok.pad_token_id)
    taken = full.gather(-1, torch.tensor([ep.actions for ep in eps]).unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(taken, torch.tensor([ep.logprobs for ep in eps]), atol=1e-4)
    assert torch.allclose(full, split, atol=1e-5)
    assert split_forward_error(model, eps[0], chat.dir_ids, 0.7, 2) < 1e-4


def test_rollout_is_reproducible_and_seed_dependent(tiny):
    model, tok = tiny
    a = rollout(model, tok, CFG, [5], group_size=4, seed=1)
    b = rollout(model, tok, CFG, [5], group_size=4, seed=1)
    c = rollout(model, tok, CFG, [5], group_size=4, seed=2)
    assert [e.actions for e in a] == [e.actions for e in b] and [e.winds for e in a] == [e.winds for e in b]
    assert [e.actions for e in a] != [e.actions for e in c]
    assert all(0 <= x < 4 for e in a for x in e.actions)


def test_temperature_sharpens_sampling(tiny):
    model, tok = tiny
    cold = rollout(model, tok, MazeConfig(size=12, n_moves=2), [5], group_size=6, temperature=0.01, seed=0)
    assert len({e.actions[0] for e in cold}) == 1  # near-greedy: same first move for the whole group
    assert all(e.logprobs[0] > -1e-3 for e in cold)


def test_unmasked_rollout_parses_free_text(tiny):
    model, tok = tiny
    eps = unmasked_rollout(model, tok, MazeConfig(size=12, n_moves=2), [5], group_size=2, seed=0, max_new_tokens=3)
    for ep in eps:
        assert len(ep.replies) == 2 and len(ep.rewards) == 2
        assert all(a in (-1, 0, 1, 2, 3) for a in ep.actions)
        assert ep.invalid == sum(a == -1 for a in ep.actions)


@pytest.mark.integration
def test_incremental_tokens_real_tokenizer(default_model):
    """SmolLM2's tokenizer: a full wind-y episode's incremental ids equal tokenizing its rendered chat."""
    _, tok = default_model
    chat = ChatTokens(tok)
    for seed in (1, 2):
        tr = good_policy_trajectory(seed, config=MazeConfig(wind_prob=0.5))
        ep = episode_from_messages(chat, tr.messages, tr.actions)
        full = tok(render_chat(tok, tr.messages), add_special_tokens=False)["input_ids"]
        assert full[: len(ep.token_ids)] == ep.token_ids
        assert "system" not in render_chat(tok, tr.messages[:1])


def test_unmasked_rollout_is_unchanged_for_a_fixed_seed(lm):
    """A seeded free-text rollout (valid and invalid replies, wind) plays exactly as recorded before the
    free-text parsing moved from MazeEnv.step into the TextActions wrapper."""
    import hashlib
    import json

    model, tok = lm
    eps = unmasked_rollout(model, tok, MazeConfig(size=12, n_moves=4, wind_prob=0.5), [5, 7], group_size=2, seed=1,
                           max_new_tokens=4, temperature=0.7)
    assert [e.actions for e in eps] == [[-1, -1, -1, -1], [-1, -1, -1, -1], [2, -1, -1, -1], [-1, 0, -1, -1]]
    assert [e.winds for e in eps] == [[None] * 4, [None, None, 1, 3], [2, None, None, 2], [None, None, 0, None]]
    assert [e.rewards for e in eps] == [[-0.1] * 4, [-0.1, -0.1, -10.1, -10.1], [-0.1] * 4, [-0.1, -10.1, 19.9, -0.1]]
    assert [e.invalid for e in eps] == [4, 4, 3, 3]
    digest = hashlib.sha256(json.dumps([[e.messages, e.entered, e.neighbours] for e in eps]).encode()).hexdigest()
    assert digest == "eb7a450557d1ad335632ac686d4db15706d694481cd98ce60012c7c405c4a250"
