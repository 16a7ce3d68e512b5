"""The one layer convention used by probes and steering (the paper's, pre-hook indexing).

Layer l (0-based, 0..L-1) means the residual stream at the INPUT of decoder block l, i.e.
`output_hidden_states[l]` in transformers terms: layer 0 is the embedding output, layer
L-1 the input of the last block. The output of the last block is not a layer: a vector
added there only biases the next-token logits of the positions it is added to (its logit
lens), so steering or choosing a layer there is degenerate. Capture (probes) and steering
(adding alpha * v) both hook that same point, with a forward pre-hook on block l.
Finding the blocks and the hidden state a block receives is training/structure.py's.
"""

from __future__ import annotations

import torch

from training.structure import block_hidden, decoder_layers

LAYER_CONVENTION = "block_input: layer l = input of decoder block l (0-based; layer 0 = embeddings; the last block's output is excluded)"


def register_layer_hook(model, layer: int, hook) -> torch.utils.hooks.RemovableHandle:
    """Register `hook(hidden, args, kwargs) -> new (args, kwargs) | None` at layer `layer` (input of block `layer`)."""
    blocks = decoder_layers(model)
    if not 0 <= layer < len(blocks):
        raise ValueError(f"layer {layer} out of range 0..{len(blocks) - 1} (layer l = input of block l)")

    def pre_hook(_module, args, kwargs):
        return hook(block_hidden(args, kwargs), args, kwargs)

    return blocks[layer].register_forward_pre_hook(pre_hook, with_kwargs=True)
