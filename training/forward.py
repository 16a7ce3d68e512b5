"""The update's forward pass: log-probs over the four direction tokens at action positions.

Each episode's whole token sequence is run once; the final hidden states are gathered
at the position before each direction token and multiplied by the four direction rows
of the unembedding, so no full-vocabulary logits are ever materialised.

When only blocks l.. are trainable (LoRA on the top K blocks), the rollout has cached the
hidden state entering block l, and the update runs just blocks l.. on it: the decoder's
block list is temporarily cut to layers[l:] and the cached states go in as
`inputs_embeds`. That is exact only for families that add nothing to `inputs_embeds` before the
first block (not GPT-2 and OPT, which add position embeddings to them), so
`split_forward_error` compares it once with the full forward and training falls back to the full
forward where they differ.
"""

from __future__ import annotations

import torch

from training.structure import blocks_from, decoder_layers, decoder_of, direction_head, direction_logits, input_embeddings, pad_batch
from training.rollout import EpisodeRecord


def first_trainable_block(model) -> int:
    """Index of the lowest decoder block with trainable parameters (0 if embeddings train too)."""
    if any(p.requires_grad for p in input_embeddings(model).parameters()):
        return 0
    for i, block in enumerate(decoder_layers(model)):
        if any(p.requires_grad for p in block.parameters()):
            return i
    return 0


def _batch(episodes: list[EpisodeRecord], use_hidden: bool, pad_id: int, device):
    # The last direction token is never an input, so sequences stop one token before it.
    lengths = [ep.action_positions[-1] for ep in episodes]
    if use_hidden:
        x, mask = pad_batch([ep.hidden[:n] for ep, n in zip(episodes, lengths)], 0, dtype=episodes[0].hidden.dtype)
        inputs = {"inputs_embeds": x.to(device)}
    else:
        ids, mask = pad_batch([ep.token_ids[:n] for ep, n in zip(episodes, lengths)], pad_id)
        inputs = {"input_ids": ids.to(device)}
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return inputs, mask.to(device), pos.to(device)


def direction_logprobs(
    model,
    episodes: list[EpisodeRecord],
    dir_ids: list[int],
    temperature: float,
    start_block: int = 0,
    pad_id: int = 0,
) -> torch.Tensor:
    """[n_episodes, n_moves, 4] log-probs over N/E/S/W at each action (gradients flow if enabled).

    With start_block > 0 the episodes' cached hidden states (entering that block) are used.
    """
    dec = decoder_of(model)
    device = next(dec.parameters()).device
    use_hidden = start_block > 0
    if use_hidden and any(ep.hidden is None or ep.hidden_layer != start_block for ep in episodes):
        raise ValueError(f"episodes lack cached hidden states for block {start_block}; roll out with cache_layer={start_block}")
    inputs, mask, pos = _batch(episodes, use_hidden, pad_id, device)
    with blocks_from(model, start_block if use_hidden else 0):
        h = dec(**inputs, attention_mask=mask, position_ids=pos, use_cache=False).last_hidden_state
    n_moves = len(episodes[0].action_positions)
    idx = torch.as_tensor([[p - 1 for p in ep.action_positions] for ep in episodes], device=device)
    h_act = h.gather(1, idx.unsqueeze(-1).expand(-1, -1, h.shape[-1]))  # [B, n_moves, H]
    w, b = direction_head(model, dir_ids)
    logits = direction_logits(h_act, w, b).float() / temperature
    assert logits.shape[1] == n_moves
    return torch.log_softmax(logits, dim=-1)


SPLIT_ATOL = 1e-3  # the largest log-prob difference between the split and the full forward that counts as equal


@torch.no_grad()
def split_forward_error(model, episode: EpisodeRecord, dir_ids: list[int], temperature: float, start_block: int) -> float:
    """Max |log-prob difference| between the cached-hidden forward (blocks start..) and the full forward."""
    full = direction_logprobs(model, [episode], dir_ids, temperature, 0)
    split = direction_logprobs(model, [episode], dir_ids, temperature, start_block)
    return float((full - split).abs().max())
