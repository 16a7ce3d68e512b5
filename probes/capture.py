"""Residual-stream capture at chosen token positions, in batched forward passes.

Layer l is the input of decoder block l (probes/layers.py). A forward pre-hook on each
requested block reduces the hidden state entering it [B, T, H] to one vector per sequence
(a weighted sum over positions: one-hot at the last token, or a mean over a span) and
stores only that [B, H]; the full [B, T, H] of a layer never outlives its hook. At the
deepest requested layer the hook raises `_StopForward`, so that block and the ones after
it, the final norm and the full-vocabulary LM head are never computed (that is where the speed margin over a plain
forward pass comes from).

Batches are right-padded: with a causal mask, real tokens never attend to the padding
to their right, and the default position ids (0..T-1) are correct for every sequence,
so capture at batch size 1 equals capture in a padded batch (tested).

A prefix common to every sequence (`iter_common_prefix_captures`: for extraction the user-turn
header and the start of the maze prompt, 16 of a one-move trajectory's 83 tokens) is run once
into a KV cache that every batch repeats along its rows; only the rest of each sequence is
computed, right-padded after the prefix. The activations equal the full sequences' (tested).

Shared prefixes (`iter_continuation_captures`): when several sequences differ only in their
last token (the paired extraction design, envs.paired_trajectories), the prefix is run once
into a KV cache, which is repeated along the batch for the one-token continuations; the
activations equal those of the full sequences (tested) at ~1/C of the cost for C continuations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from probes.layers import register_layer_hook
from training.structure import cache_kwargs, decoder_layers, pad_batch
from training.models import pad_token_id


class _StopForward(Exception):
    """Raised by the hook of the deepest needed block to skip the rest of the forward pass."""


@dataclass
class Span:
    """Token positions [start, end) of one sequence whose activations are averaged (end exclusive)."""

    start: int
    end: int


def tokenize_texts(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text, no special tokens added (chat templates already contain theirs)."""
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def last_token_spans(ids: Sequence[Sequence[int]]) -> list[Span]:
    return [Span(len(x) - 1, len(x)) for x in ids]


def mean_spans(ids: Sequence[Sequence[int]], skip: int = 3) -> list[Span]:
    """Mean over tokens from `skip` on (all tokens if a text is shorter than skip + 1)."""
    return [Span(skip if len(x) > skip else 0, len(x)) for x in ids]


def _span_weights(spans: Sequence[Span], width: int) -> torch.Tensor:
    w = torch.zeros((len(spans), width), dtype=torch.float32)
    for i, s in enumerate(spans):
        if not 0 <= s.start < s.end <= width:
            raise ValueError(f"span [{s.start}, {s.end}) does not fit a sequence of {width} tokens")
        w[i, s.start : s.end] = 1.0 / (s.end - s.start)
    return w


def _checked_layers(model, layers: Sequence[int]) -> list[int]:
    """`layers` as a list, each a valid decoder-block index of `model` (checked before any forward pass)."""
    n_blocks = len(decoder_layers(model))
    layers = list(layers)
    if not layers or min(layers) < 0 or max(layers) >= n_blocks:
        raise ValueError(f"layers must be in 0..{n_blocks - 1}, got {layers}")
    return layers


@torch.inference_mode()
def capture_batch(
    model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, weights: torch.Tensor, layers: Sequence[int], **forward_kwargs
) -> torch.Tensor:
    """[B, len(layers), H] float32: per sequence, sum_t weights[b, t] * hidden_l[b, t] for each layer.

    `forward_kwargs` (a KV cache, position ids) go to the model's forward."""
    layers = _checked_layers(model, layers)
    device = next(model.parameters()).device
    weights = weights.to(device)
    out = torch.empty((input_ids.shape[0], len(layers), model.config.hidden_size), dtype=torch.float32, device=device)
    last = max(layers)
    slots = {}
    for j, layer in enumerate(layers):
        slots.setdefault(layer, []).append(j)

    def make_hook(layer: int):
        def hook(h, _args, _kwargs):
            # Only the reduced [B, H] is kept; the layer's [B, T, H] is freed with the graph.
            reduced = torch.einsum("bt,bth->bh", weights, h.to(torch.float32))
            for j in slots[layer]:
                out[:, j] = reduced
            if layer == last:
                raise _StopForward

        return hook

    mask = None if attention_mask is None else attention_mask.to(device)
    _forward_with_hooks(model, [(layer, make_hook(layer)) for layer in slots], input_ids.to(device), mask, **forward_kwargs)
    return out.cpu()


def _forward_with_hooks(model, hooks: list, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, **forward_kwargs) -> None:
    """One forward with (layer, hook) pre-hooks attached; a hook may raise `_StopForward` to end it early. Hooks are always removed."""
    handles = [register_layer_hook(model, layer, hook) for layer, hook in hooks]
    forward_kwargs.setdefault("use_cache", False)
    try:
        model(input_ids=input_ids, attention_mask=attention_mask, **forward_kwargs)
    except _StopForward:
        pass
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def prefix_cache(model, prefix: torch.Tensor, stop_at: int | None = None):
    """A DynamicCache holding prefix [B, T] (no padding): every block's keys and values, or only those of the
    blocks below `stop_at` (the pass stops at that block's input). Shared prefixes are run once this way,
    by extraction and by the steering screen."""
    from transformers import DynamicCache

    def stop(_h, _args, _kwargs):
        raise _StopForward

    device = next(model.parameters()).device
    cache = DynamicCache(config=model.config)
    handle = None if stop_at is None else register_layer_hook(model, stop_at, stop)
    try:
        model(input_ids=prefix.to(device), use_cache=True, logits_to_keep=1, **cache_kwargs(model, cache))  # fills `cache` in place
    except _StopForward:
        pass
    finally:
        if handle is not None:
            handle.remove()
    return cache


@torch.inference_mode()
def capture_continuations(model, prefix: torch.Tensor, last: torch.Tensor, layers: Sequence[int]) -> torch.Tensor:
    """[B, C, len(layers), H] float32: activations at the last token of prefix[b] + [last[b, c]].

    prefix [B, T] (same length, no padding), last [B, C]. Both passes stop at the deepest
    requested block's input, so the cache holds exactly the blocks below it."""
    layers = _checked_layers(model, layers)
    device = next(model.parameters()).device
    n_b, n_t = prefix.shape
    n_c = last.shape[1]
    deepest = max(layers)

    cache = prefix_cache(model, prefix, deepest)
    cache.batch_repeat_interleave(n_c)
    ids = last.reshape(n_b * n_c, 1).to(device)
    pos = torch.full((n_b * n_c, 1), n_t, dtype=torch.long, device=device)
    ones = torch.ones((n_b * n_c, 1), dtype=torch.float32)
    acts = capture_batch(model, ids, None, ones, layers, position_ids=pos, use_cache=True, **cache_kwargs(model, cache))
    return acts.reshape(n_b, n_c, len(layers), -1)


def iter_continuation_captures(
    model,
    prefixes: Sequence[Sequence[int]],
    last: Sequence[Sequence[int]],
    layers: Sequence[int],
    batch_size: int = 16,
    progress: bool = False,
    desc: str = "capture",
) -> Iterator[tuple[list[int], torch.Tensor]]:
    """Yield (prefix indices, activations [b, C, len(layers), H]) for prefixes[i] + [last[i][c]].

    Prefixes are batched with others of the same length (no padding, so no mask or position
    bookkeeping); each batch holds at most `batch_size` prefixes."""
    from tqdm.auto import tqdm

    if len(prefixes) != len(last):
        raise ValueError(f"{len(prefixes)} prefixes but {len(last)} continuation lists")
    if any(len(p) == 0 for p in prefixes):
        raise ValueError("a prefix is empty; the continuations need at least one token before them")
    by_length: dict[int, list[int]] = {}
    for i in sorted(range(len(prefixes)), key=lambda i: len(prefixes[i])):
        by_length.setdefault(len(prefixes[i]), []).append(i)
    batches = [g[i : i + batch_size] for g in by_length.values() for i in range(0, len(g), batch_size)]
    for batch in tqdm(batches, desc=desc, disable=not progress, unit="batch"):
        prefix = torch.tensor([list(prefixes[i]) for i in batch], dtype=torch.long)
        tails = torch.tensor([list(last[i]) for i in batch], dtype=torch.long)
        yield batch, capture_continuations(model, prefix, tails, layers)


def length_sorted_batches(ids: Sequence[Sequence[int]], batch_size: int) -> list[list[int]]:
    """Indices of `ids` sorted by length, in batches of `batch_size`: little padding per batch."""
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def iter_captures(
    model,
    ids: Sequence[Sequence[int]],
    spans: Sequence[Span],
    layers: Sequence[int],
    batch_size: int = 16,
    pad_id: int = 0,
    progress: bool = False,
    desc: str = "capture",
) -> Iterator[tuple[list[int], torch.Tensor]]:
    """Yield (example indices, activations [b, len(layers), H]) over length-sorted batches.

    Sorting by length keeps padding (wasted compute) small; callers scatter results back
    by the yielded indices. Memory per step is O(batch x layers x hidden).
    """
    from tqdm.auto import tqdm

    if len(ids) != len(spans):
        raise ValueError(f"{len(ids)} token lists but {len(spans)} spans")
    batches = length_sorted_batches(ids, batch_size)
    for batch in tqdm(batches, desc=desc, disable=not progress, unit="batch"):
        input_ids, mask = pad_batch([ids[i] for i in batch], pad_id)
        weights = _span_weights([spans[i] for i in batch], input_ids.shape[1])
        yield batch, capture_batch(model, input_ids, mask, weights, layers)


MIN_CACHED_PREFIX = 8  # below this many shared tokens the cache's bookkeeping is not worth it


def common_prefix_length(ids: Sequence[Sequence[int]], min_prefix: int = MIN_CACHED_PREFIX) -> int:
    """Tokens every sequence starts with, leaving at least one token of each after them; 0 if under `min_prefix`."""
    if not ids:
        return 0
    n = min(len(x) for x in ids) - 1
    first = ids[0]
    for x in ids[1:]:
        k = 0
        while k < n and x[k] == first[k]:
            k += 1
        n = k
    return n if n >= min_prefix else 0


@torch.inference_mode()
def iter_common_prefix_captures(
    model,
    ids: Sequence[Sequence[int]],
    layers: Sequence[int],
    batch_size: int = 16,
    pad_id: int = 0,
    progress: bool = False,
    desc: str = "capture",
) -> Iterator[tuple[list[int], torch.Tensor]]:
    """`iter_captures` at each sequence's last token, with the prefix common to all of `ids` run once.

    The prefix's KV cache (blocks below the deepest requested layer) is repeated along each
    batch; the rest of each sequence is right-padded after it, with position ids continuing
    from the prefix. With no prefix worth caching (`common_prefix_length` 0) this is plain `iter_captures`.
    """
    import copy

    from tqdm.auto import tqdm

    n_prefix = common_prefix_length(ids)
    if n_prefix == 0:
        yield from iter_captures(model, ids, last_token_spans(ids), layers, batch_size, pad_id, progress, desc)
        return
    layers = _checked_layers(model, layers)  # before the prefix pass
    device = next(model.parameters()).device
    prefix = prefix_cache(model, torch.tensor([list(ids[0][:n_prefix])], dtype=torch.long), max(layers))
    batches = length_sorted_batches(ids, batch_size)
    for batch in tqdm(batches, desc=desc, disable=not progress, unit="batch"):
        rest = [list(ids[i][n_prefix:]) for i in batch]
        input_ids, mask = pad_batch(rest, pad_id)
        n_b, width = input_ids.shape
        cache = copy.deepcopy(prefix)
        cache.batch_repeat_interleave(n_b)
        mask = torch.cat([torch.ones((n_b, n_prefix), dtype=mask.dtype), mask], dim=1)
        pos = (n_prefix + torch.arange(width)).expand(n_b, width).to(device)
        weights = _span_weights(last_token_spans(rest), width)
        yield batch, capture_batch(model, input_ids, mask, weights, layers, position_ids=pos, use_cache=True, **cache_kwargs(model, cache))


def capture_texts(
    model,
    tokenizer,
    texts: Sequence[str],
    layers: Sequence[int],
    reduce: str = "last",
    skip: int = 3,
    batch_size: int = 16,
    progress: bool = False,
    desc: str = "capture",
) -> torch.Tensor:
    """[N, len(layers), H] activations of `texts` (reduce: "last" token or "mean" from token `skip` on).

    Keeps all N results: for analysis-sized inputs (stories, tracking), not for extraction.
    """
    if reduce not in ("last", "mean"):
        raise ValueError(f"reduce must be 'last' or 'mean', got {reduce!r}")
    ids = tokenize_texts(tokenizer, texts)
    if any(len(x) == 0 for x in ids):
        raise ValueError("cannot capture an empty text")
    spans = last_token_spans(ids) if reduce == "last" else mean_spans(ids, skip)
    out = torch.empty((len(texts), len(layers), model.config.hidden_size), dtype=torch.float32)
    pad_id = pad_token_id(tokenizer)
    for idx, acts in iter_captures(model, ids, spans, layers, batch_size, pad_id, progress, desc):
        out[idx] = acts
    return out


@torch.inference_mode()
def channel_moments(
    model, tokenizer, texts: Sequence[str], layers: Sequence[int], skip: int = 3, batch_size: int = 16, progress: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, sd) [len(layers), H] float64 of each residual channel over every token of `texts` from token `skip` on.

    Streams sums and sums of squares (nothing per token is kept). The first tokens are
    skipped because they carry the attention-sink activations, thousands of times larger
    than a normal token's, which would swamp the per-channel spread.
    """
    ids = tokenize_texts(tokenizer, texts)
    spans = mean_spans(ids, skip)
    layers = list(layers)
    last = max(layers)
    device = next(model.parameters()).device
    hidden = model.config.hidden_size
    s1 = torch.zeros((len(layers), hidden), dtype=torch.float64)
    s2 = torch.zeros_like(s1)
    count = 0
    from tqdm.auto import tqdm

    for batch in tqdm(length_sorted_batches(ids, batch_size), desc="channel moments", disable=not progress, unit="batch"):
        input_ids, mask = pad_batch([ids[i] for i in batch], pad_token_id(tokenizer))
        keep = torch.zeros(input_ids.shape, dtype=torch.bool)
        for j, i in enumerate(batch):
            keep[j, spans[i].start : spans[i].end] = True
        count += int(keep.sum())

        def make_hook(j: int):
            def hook(h, _args, _kwargs):
                x = h.to(torch.float64).cpu()[keep]  # [tokens, H]
                s1[j] += x.sum(0)
                s2[j] += (x * x).sum(0)
                if layers[j] == last:
                    raise _StopForward

            return hook

        _forward_with_hooks(model, [(layers[j], make_hook(j)) for j in range(len(layers))], input_ids.to(device), mask.to(device))
    if count < 2:
        raise ValueError("need at least 2 tokens of text for channel moments")
    mean = s1 / count
    sd = (s2 / count - mean * mean).clamp(min=0).sqrt()
    return mean, sd
