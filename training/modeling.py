"""Where things are inside a Hugging Face causal LM, and the one padded-batch layout.

Every package that reaches into a model (rollouts and updates in training/, capture and
planting in probes/, steering, mechanics) finds the decoder blocks, the hidden state a
block receives and the four direction rows of the unembedding here, so a new
architecture is taught in one place. Which block a "layer" means is probes/layers.py's
convention, built on these.
"""

from __future__ import annotations

import functools
from typing import Sequence

import torch


def causal_lm(model):
    """The underlying *ForCausalLM of a plain or PEFT-wrapped model."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def decoder_of(model):
    """The decoder stack (embeddings, blocks, final norm) of a causal LM: what a forward without the LM head runs."""
    lm = causal_lm(model)
    dec = getattr(lm, "model", None)
    if dec is None or not hasattr(dec, "layers"):
        dec = lm.get_decoder()
    return dec


def cache_kwargs(module, cache) -> dict:
    """{name: cache} for a forward's KV-cache argument: `cache` in recent transformers v5,
    `past_key_values` before (deprecated in 5.2x, removed in 5.40). `module` is a causal LM
    or its decoder; the cache is filled in place. Called once per decoded token, so the
    signature is read once per forward function."""
    forward = module.forward
    return {_cache_arg(getattr(forward, "__func__", forward)): cache}


@functools.lru_cache(maxsize=None)
def _cache_arg(forward) -> str:
    import inspect

    return "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"


def decoder_layers(model) -> torch.nn.ModuleList:
    """The list of decoder blocks of a causal LM (Llama/Mistral/Qwen/GPT-2 style, PEFT-wrapped too)."""
    candidates = [model]
    for attr in ("base_model", "model"):
        for m in list(candidates):
            sub = getattr(m, attr, None)
            if sub is not None:
                candidates.append(sub)
    for m in candidates:
        for path in ("model.layers", "layers", "transformer.h", "h", "gpt_neox.layers"):
            obj = m
            for part in path.split("."):
                obj = getattr(obj, part, None)
                if obj is None:
                    break
            if isinstance(obj, torch.nn.ModuleList):
                return obj
    raise ValueError(f"cannot find the decoder blocks of {type(model).__name__}; expected model.layers or transformer.h")


def block_hidden(args: tuple, kwargs: dict) -> torch.Tensor:
    """The hidden state entering a decoder block, from a forward pre-hook's (args, kwargs).

    Blocks receive it positionally or as `hidden_states=` depending on the transformers version."""
    return args[0] if args else kwargs["hidden_states"]


def replace_block_hidden(args: tuple, kwargs: dict, hidden: torch.Tensor) -> tuple[tuple, dict]:
    """A pre-hook's (args, kwargs) with the block's input hidden state replaced."""
    if args:
        return (hidden, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": hidden}


def direction_head(model, dir_ids: list[int]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The four unembedding rows (and bias) of the direction tokens: the only logits the policy needs."""
    head = causal_lm(model).get_output_embeddings()
    idx = torch.as_tensor(dir_ids, device=head.weight.device)
    bias = head.bias[idx] if getattr(head, "bias", None) is not None else None
    return head.weight[idx], bias


def direction_logits(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    out = hidden @ weight.T
    return out + bias if bias is not None else out


def pad_batch(rows: Sequence, pad=0, *, left: bool = False, dtype: torch.dtype = torch.long) -> tuple[torch.Tensor, torch.Tensor]:
    """(values [B, W, ...], attention mask [B, W] long): each row padded with `pad` to the longest.

    Rows are token ids, per-token flags or [n, H] hidden states. Right padding (the default)
    keeps positions 0..n-1 of every row where they are, so a causal forward needs no
    position ids; left padding lines up the last tokens, as batched generation needs.
    """
    width = max(len(r) for r in rows)
    trailing = tuple(torch.as_tensor(rows[0], dtype=dtype).shape[1:])
    values = torch.full((len(rows), width, *trailing), pad, dtype=dtype)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        span = slice(width - len(r), width) if left else slice(0, len(r))
        values[i, span] = torch.as_tensor(r, dtype=dtype)
        mask[i, span] = 1
    return values, mask
