"""Where things are inside a Hugging Face causal LM, and the one padded-batch layout.

Every package that reaches into a model (rollouts and updates in training/, capture and
planting in probes/, steering, mechanics) finds the decoder blocks, the hidden state a
block receives and the four direction rows of the unembedding here, so a new
architecture is taught in one place. Which block a "layer" means is probes/layers.py's
convention, built on these.
"""

from __future__ import annotations

import functools
import re
from contextlib import contextmanager
from typing import Sequence

import torch


def causal_lm(model):
    """The underlying *ForCausalLM of a plain or PEFT-wrapped model."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def decoder_of(model):
    """The decoder stack (embeddings, blocks, final norm) of a causal LM: what a forward without the LM head
    runs, returning `last_hidden_state` (`model` of Llama-style models, `transformer` of GPT-2 and Falcon,
    `gpt_neox` of GPT-NeoX, `model` of OPT, whose blocks sit one level lower in `model.decoder`)."""
    return causal_lm(model).base_model


# Where each family keeps its blocks and its final norm, relative to `decoder_of`.
_BLOCK_PATHS = ("layers", "h", "decoder.layers", "blocks")
_FINAL_NORM_PATHS = ("norm", "ln_f", "final_layer_norm", "decoder.final_layer_norm", "final_norm")


def _get(obj, path: str):
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def _blocks_owner(model) -> tuple[torch.nn.Module, str]:
    """(module, attribute) holding the decoder blocks' ModuleList."""
    dec = decoder_of(model)
    for path in _BLOCK_PATHS:
        if isinstance(_get(dec, path), torch.nn.ModuleList):
            owner, _, attr = path.rpartition(".")
            return (_get(dec, owner) if owner else dec), attr
    raise ValueError(f"cannot find the decoder blocks of {type(causal_lm(model)).__name__}; "
                     f"expected one of {', '.join(_BLOCK_PATHS)} under its {type(dec).__name__}")


def blocks_attribute(model) -> str:
    """The attribute name of the blocks' ModuleList ("layers", "h"): peft's `layers_pattern`."""
    return _blocks_owner(model)[1]


def decoder_layers(model) -> torch.nn.ModuleList:
    """The list of decoder blocks of a causal LM (Llama, Mistral, Qwen, Gemma, Phi-3, GPT-2, GPT-NeoX, OPT,
    Falcon; PEFT-wrapped too)."""
    owner, attr = _blocks_owner(model)
    return getattr(owner, attr)


@contextmanager
def blocks_from(model, start: int):
    """Temporarily keep only decoder blocks start.. in the decoder, so that what enters as `inputs_embeds`
    enters block `start` (the caller checks that the family adds nothing to inputs_embeds first:
    `training.forward.split_forward_error`)."""
    if start <= 0:
        yield
        return
    owner, attr = _blocks_owner(model)
    full = getattr(owner, attr)
    setattr(owner, attr, torch.nn.ModuleList(list(full)[start:]))
    try:
        yield
    finally:
        setattr(owner, attr, full)


def input_embeddings(model) -> torch.nn.Module:
    return causal_lm(model).get_input_embeddings()


def final_norm(model) -> torch.nn.Module | None:
    """The norm applied to the last block's output before the unembedding (None if the family has none)."""
    dec = getattr(causal_lm(model), "base_model", None)
    for path in _FINAL_NORM_PATHS:
        m = _get(dec, path)
        if isinstance(m, torch.nn.Module):
            return m
    return None


def final_norm_gain(model) -> torch.Tensor:
    """[H] per-channel gain of the final norm, float32 on cpu: a LayerNorm's weight; an RMS norm's weight, or
    what it does to a vector of ones (rms 1) where that differs from the weight (Gemma's 1 + weight); ones
    without a norm."""
    norm = final_norm(model)
    hidden = causal_lm(model).get_output_embeddings().weight.shape[1]
    if norm is None:
        return torch.ones(hidden)
    weight = getattr(norm, "weight", None)
    if getattr(norm, "bias", None) is not None and weight is not None:
        return weight.detach().float().cpu()
    with torch.no_grad():
        p = next(norm.parameters(), None)
        x = torch.ones(1, hidden, device=p.device if p is not None else "cpu", dtype=p.dtype if p is not None else torch.float32)
        gain = norm(x)[0].detach().float().cpu()
    if weight is not None and torch.allclose(gain, weight.detach().float().cpu(), rtol=1e-3, atol=1e-5):
        return weight.detach().float().cpu()
    return gain


def gated_mlp(block) -> torch.nn.Module | None:
    """A block's gated MLP, down_proj(act_fn(gate_proj(x)) * up_proj(x)), or None when the MLP is not gated
    (GPT-2, GPT-NeoX, OPT, Falcon) or fuses gate and up into one matrix (Phi-3)."""
    mlp = getattr(block, "mlp", None)
    if mlp is None or not all(hasattr(mlp, k) for k in ("gate_proj", "up_proj", "down_proj", "act_fn")):
        return None
    return mlp


def block_index(parameter_name: str) -> int | None:
    """Decoder block index in a parameter name ("model.layers.3.mlp.up_proj.weight", "transformer.h.3.attn...",
    "model.decoder.layers.3...") -> 3; None outside the blocks."""
    m = _BLOCK_INDEX.search(parameter_name)
    return int(m.group(1)) if m else None


# a block's parameters are named <...>.<the blocks' attribute>.<index>.<...>, the attribute from _BLOCK_PATHS
_BLOCK_INDEX = re.compile(r"(?:^|\.)(?:" + "|".join(sorted({p.rpartition(".")[2] for p in _BLOCK_PATHS})) + r")\.(\d+)\.")


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
