"""Batched multi-turn maze rollouts with the KV cache reused across turns.

One call plays `len(maze_seeds) * group_size` episodes at once. The G episodes of a
group share a maze (same maze seed, so the same map, start and clause order) and hence
the same first prompt: each group's first prompt is encoded once and its KV cache is
repeated G times. Each later turn appends only the new tokens (the sampled direction,
then the chat up to the next assistant prompt) to the cache. Turns differ in length
across episodes (wind messages, coordinates), so each turn's chunk is right-padded and
the pad slots stay in the cache as holes: a 2-D attention mask zeroes them, and explicit
position_ids (cumsum(mask) - 1) give every real token the position it would have in the
unpadded sequence. Only the four direction logits are computed: the last position's
final hidden state times the four unembedding rows of N/E/S/W.

`unmasked_rollout` is the free-generation mode (replies parsed by the `TextActions` wrapper) for
models whose direction letters are not single tokens; it re-encodes the history each
turn and is meant for evaluation, not training.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from envs import MazeConfig, MazeEnv, TextActions
from training.chat import render_chat
from training.structure import block_hidden, cache_kwargs, causal_lm, decoder_layers, decoder_of, direction_head, direction_logits, pad_batch
from training.models import check_direction_tokens, pad_token_id


@dataclass
class EpisodeRecord:
    """One played episode, with everything an update needs."""

    maze_seed: int
    group: int  # index of the maze (GRPO group) within the batch
    env_seed: int  # seeds the wind
    actions: list[int] = field(default_factory=list)  # 0..3 = N, E, S, W (-1 = invalid, unmasked mode)
    logprobs: list[float] = field(default_factory=list)  # log pi_old(a) over the 4 directions at temperature T
    rewards: list[float] = field(default_factory=list)  # per move
    entered: list[list[str]] = field(default_factory=list)  # tiles entered per move (2 with wind)
    neighbours: list[tuple[int, int, int, int]] = field(default_factory=list)  # tile kinds N,E,S,W before each move
    winds: list[int | None] = field(default_factory=list)  # wind direction per move, None if calm
    golds: int = 0
    molds: int = 0
    invalid: int = 0
    token_ids: list[int] = field(default_factory=list)  # the whole chat, ending with the last direction token
    action_positions: list[int] = field(default_factory=list)  # index in token_ids of each direction token
    messages: list[dict[str, str]] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)  # unmasked mode: raw replies
    hidden: torch.Tensor | None = None  # [len(token_ids), H]: input of block `hidden_layer` (cached for updates)
    hidden_layer: int | None = None

    @property
    def total_reward(self) -> float:
        return float(sum(self.rewards))


# -- tokens ------------------------------------------------------------------------------------------
class ChatTokens:
    """Incremental token ids of a maze chat, equal to tokenizing the whole rendered chat.

    The text appended after each direction letter is the difference between the chat
    rendered with the next user message (and the generation prompt) and the text so far.
    """

    def __init__(self, tokenizer, letters: tuple[str, ...] = ("N", "E", "S", "W")):
        self.tok = tokenizer
        self.letters = letters
        self.dir_ids = check_direction_tokens(tokenizer, letters)

    def encode(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def first(self, first_user: str) -> tuple[str, list[int]]:
        text = render_chat(self.tok, [{"role": "user", "content": first_user}], add_generation_prompt=True)
        return text, self.encode(text)

    def after_move(self, text_so_far: str, messages: list[dict[str, str]]) -> tuple[str, list[int]]:
        """`messages` ends with (assistant letter, next user); returns (new text, ids after the letter)."""
        full = render_chat(self.tok, messages, add_generation_prompt=True)
        prefix = text_so_far + messages[-2]["content"]
        if not full.startswith(prefix):
            raise ValueError("the chat template is not append-only; incremental tokens would be wrong")
        return full, self.encode(full[len(prefix):])


# -- masked (single-token) rollout --------------------------------------------------------------------
def _capture_block_input(model, layer: int | None):
    """Forward pre-hook storing the hidden state entering block `layer` on each forward."""
    store: list[torch.Tensor] = []
    if layer is None or layer <= 0:
        return store, None

    def hook(module, args, kwargs):
        store.append(block_hidden(args, kwargs).detach())

    handle = decoder_layers(model)[layer].register_forward_pre_hook(hook, with_kwargs=True)
    return store, handle


def start_episodes(maze_config, maze_seeds, group_size: int, rng: np.random.Generator) -> tuple[list[MazeEnv], list[EpisodeRecord]]:
    """Reset `group_size` envs per maze seed (a GRPO group shares the maze; wind differs per episode)."""
    envs, eps = [], []
    for g, ms in enumerate(maze_seeds):
        for _ in range(group_size):
            env = MazeEnv(maze_config)
            env_seed = int(rng.integers(2**31 - 1))
            obs, _ = env.reset(seed=env_seed, options={"maze_seed": int(ms)})
            envs.append(env)
            eps.append(EpisodeRecord(maze_seed=int(ms), group=g, env_seed=env_seed))
            eps[-1].messages.append({"role": "user", "content": obs})
    return envs, eps


@torch.no_grad()
def rollout(
    model,
    tokenizer,
    maze_config: MazeConfig,
    maze_seeds: list[int],
    group_size: int,
    temperature: float = 0.7,
    seed: int = 0,
    cache_layer: int | None = None,
    chat: ChatTokens | None = None,
) -> list[EpisodeRecord]:
    """Play `group_size` episodes on each maze in `maze_seeds`, all in one batch.

    Sampling is masked to the four direction tokens at `temperature`; `seed` fixes the
    wind and the sampling. With `cache_layer` = l > 0, each record keeps the hidden
    state entering block l at every token (what an update of blocks l.. needs).
    """
    chat = chat or ChatTokens(tokenizer, maze_config.letters)
    dec = decoder_of(model)
    device = next(dec.parameters()).device
    w_dir, b_dir = direction_head(model, chat.dir_ids)
    pad_id = pad_token_id(tokenizer)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))

    G, n_groups = group_size, len(maze_seeds)
    envs, eps = start_episodes(maze_config, maze_seeds, G, rng)
    texts, first_ids = [], []
    for g in range(n_groups):
        text, ids = chat.first(eps[g * G].messages[0]["content"])  # identical for the whole group: same maze, no wind yet
        first_ids.append(ids)
        texts += [text] * G
    for i, ep in enumerate(eps):
        ep.token_ids = list(first_ids[i // G])

    store, handle = _capture_block_input(model, cache_layer)
    hidden_parts: list[list[torch.Tensor]] = [[] for _ in eps]
    try:
        from transformers import DynamicCache

        cache = DynamicCache(config=causal_lm(model).config)
        ids, mask = pad_batch(first_ids, pad_id)
        lens = mask.sum(-1)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        out = dec(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=pos.to(device), use_cache=True, **cache_kwargs(dec, cache))
        last = out.last_hidden_state[torch.arange(n_groups), lens - 1]
        if store:
            h = store.pop()
            for i in range(len(eps)):
                g = i // G
                hidden_parts[i].append(h[g, : lens[g]].cpu())
        # One prompt per group -> G copies of its cache, mask and last hidden state.
        cache.batch_repeat_interleave(G)
        mask = mask.repeat_interleave(G, dim=0).to(device)
        last = last.repeat_interleave(G, dim=0)

        n_moves = maze_config.n_moves
        for t in range(n_moves):
            logits = direction_logits(last, w_dir, b_dir).float() / temperature
            logp = torch.log_softmax(logits, dim=-1).cpu()
            actions = torch.multinomial(logp.exp(), 1, generator=gen).squeeze(1)
            new_tokens = []
            for i, (env, ep) in enumerate(zip(envs, eps)):
                a = int(actions[i])
                ep.neighbours.append(env.neighbour_tiles())
                obs, r, _, _, info = env.step(a)
                ep.actions.append(a)
                ep.logprobs.append(float(logp[i, a]))
                ep.rewards.append(float(r))
                ep.entered.append(info["entered"])
                ep.winds.append(None if info["wind_direction"] is None else chat.letters.index(info["wind_direction"]))
                ep.golds, ep.molds = info["golds"], info["molds"]
                ep.action_positions.append(len(ep.token_ids))
                ep.token_ids.append(chat.dir_ids[a])
                ep.messages.append({"role": "assistant", "content": chat.letters[a]})
                if t == n_moves - 1:
                    continue
                ep.messages.append({"role": "user", "content": obs})
                texts[i], rest = chat.after_move(texts[i], ep.messages)
                ep.token_ids += rest
                new_tokens.append([chat.dir_ids[a], *rest])
            if t == n_moves - 1:
                break
            ids, chunk_mask = pad_batch(new_tokens, pad_id)
            lens = chunk_mask.sum(-1)
            mask = torch.cat([mask, chunk_mask.to(device)], dim=1)
            pos = (mask.cumsum(-1) - 1).clamp(min=0)[:, -ids.shape[1]:]
            out = dec(input_ids=ids.to(device), attention_mask=mask, position_ids=pos, use_cache=True, **cache_kwargs(dec, cache))
            last = out.last_hidden_state[torch.arange(len(eps)), lens.to(device) - 1]
            if store:
                h = store.pop()
                for i in range(len(eps)):
                    hidden_parts[i].append(h[i, : lens[i]].cpu())
    finally:
        if handle is not None:
            handle.remove()
    for ep, parts in zip(eps, hidden_parts):
        if parts:
            # The final direction token was never fed; the update never needs its hidden state.
            ep.hidden = torch.cat(parts, dim=0)
            ep.hidden_layer = cache_layer
            assert ep.hidden.shape[0] == len(ep.token_ids) - 1
    return eps


# -- unmasked (free generation) rollout ----------------------------------------------------------------
@torch.no_grad()
def unmasked_rollout(
    model,
    tokenizer,
    maze_config: MazeConfig,
    maze_seeds: list[int],
    group_size: int = 1,
    temperature: float = 0.7,
    seed: int = 0,
    max_new_tokens: int = 8,
) -> list[EpisodeRecord]:
    """Free-text replies (sampled over the full vocabulary), parsed by `TextActions`; for evaluation."""
    lm = causal_lm(model)
    device = next(lm.parameters()).device
    rng = np.random.default_rng(seed)
    torch_seed = int(rng.integers(2**62))
    envs, eps = start_episodes(maze_config, maze_seeds, group_size, rng)
    players = [TextActions(env) for env in envs]  # a reply naming no single direction is the invalid move
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(torch_seed)
            for _t in range(maze_config.n_moves):
                prompts = [render_chat(tokenizer, ep.messages, add_generation_prompt=True) for ep in eps]
                enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
                out = lm.generate(
                    **enc, do_sample=True, temperature=temperature, top_k=0, top_p=1.0, max_new_tokens=max_new_tokens,
                    pad_token_id=tokenizer.pad_token_id,
                )
                replies = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
                for env, player, ep, reply in zip(envs, players, eps, replies):
                    reply = reply.strip()
                    ep.neighbours.append(env.neighbour_tiles())
                    obs, r, _, trunc, info = player.step(reply)
                    ep.replies.append(reply)
                    ep.actions.append(-1 if info["invalid"] else env.letters.index(info["action"]))
                    ep.rewards.append(float(r))
                    ep.entered.append(info["entered"])
                    ep.winds.append(None if info["wind_direction"] is None else env.letters.index(info["wind_direction"]))
                    ep.golds, ep.molds, ep.invalid = info["golds"], info["molds"], info["invalid_moves"]
                    ep.messages.append({"role": "assistant", "content": reply})
                    if not trunc:
                        ep.messages.append({"role": "user", "content": obs})
    finally:
        tokenizer.padding_side = old_side
    return eps
