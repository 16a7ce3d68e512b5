"""The one layer convention used by probes and steering (the paper's, pre-hook indexing).

Layer l (0-based, 0..L-1) means the residual stream at the INPUT of decoder block l, i.e.
`output_hidden_states[l]` in transformers terms: layer 0 is the embedding output, layer
L-1 the input of the last block. The output of the last block is not a layer: a vector
added there only biases the next-token logits of the positions it is added to (its logit
lens), so steering or choosing a layer there is degenerate. Capture (probes) and steering
(adding alpha * v) both hook that same point, with a forward pre-hook on block l.
"""

from __future__ import annotations

import torch

LAYER_CONVENTION = "block_input: layer l = input of decoder block l (0-based; layer 0 = embeddings; the last block's output is excluded)"


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


def layer_input(args: tuple, kwargs: dict) -> torch.Tensor:
    """The hidden state entering a decoder block, from a forward pre-hook's (args, kwargs)."""
    return args[0] if args else kwargs["hidden_states"]


def replace_layer_input(args: tuple, kwargs: dict, hidden: torch.Tensor) -> tuple[tuple, dict]:
    """A pre-hook's (args, kwargs) with the block's input hidden state replaced."""
    if args:
        return (hidden, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": hidden}


def register_layer_hook(model, layer: int, hook) -> torch.utils.hooks.RemovableHandle:
    """Register `hook(hidden, args, kwargs) -> new (args, kwargs) | None` at layer `layer` (input of block `layer`)."""
    blocks = decoder_layers(model)
    if not 0 <= layer < len(blocks):
        raise ValueError(f"layer {layer} out of range 0..{len(blocks) - 1} (layer l = input of block l)")

    def pre_hook(_module, args, kwargs):
        return hook(layer_input(args, kwargs), args, kwargs)

    return blocks[layer].register_forward_pre_hook(pre_hook, with_kwargs=True)
