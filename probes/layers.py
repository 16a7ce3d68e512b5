"""The one layer convention used by probes and steering.

Layer l (0-based, 0..L-1) means the residual stream at the OUTPUT of decoder block l,
i.e. `output_hidden_states[l + 1]` in transformers terms; the embedding output is not a
layer. Capture (probes) and steering (adding alpha * v) both hook that same point.
Caveat (checked in tests, transformers 5.x): the LAST entry of `output_hidden_states` is
the final-norm output, not the last block's raw output; for l = L-1 our layer is the raw
block output (what a forward hook on the block sees), i.e. before the final norm.
"""

from __future__ import annotations

import torch

LAYER_CONVENTION = "block_output: layer l = output of decoder block l (0-based), embeddings excluded"


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


def block_hidden(output):
    """The hidden-state tensor of a decoder block's output (tensor or tuple, by transformers version)."""
    return output[0] if isinstance(output, (tuple, list)) else output


def replace_block_hidden(output, hidden: torch.Tensor):
    """A block output of the same structure with its hidden state replaced."""
    if isinstance(output, tuple):
        return (hidden, *output[1:])
    if isinstance(output, list):
        return [hidden, *output[1:]]
    return hidden
