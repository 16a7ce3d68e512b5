"""The policy a run trains: the loaded model made trainable, LoRA-wrapped (peft) or in full."""

from __future__ import annotations

import torch

from training.config import TrainConfig
from training.structure import blocks_attribute, decoder_layers
from training.models import load_model


def build_policy(config: TrainConfig):
    """(model, tokenizer) ready to train: LoRA-wrapped (peft) or fully trainable."""
    model, tok = load_model(config.model, device=config.device, dtype=config.dtype)
    torch.manual_seed(config.seed)  # LoRA A matrices are random: fix them
    if config.finetune == "lora":
        from peft import LoraConfig, get_peft_model
        from transformers.pytorch_utils import Conv1D

        blocks = decoder_layers(model)
        n_layers, top = len(blocks), config.lora_top_layers
        if top > n_layers:
            raise ValueError(f"lora_top_layers={top} exceeds the model's {n_layers} blocks")
        if config.lora_targets != "all-linear":
            targets = [t.strip() for t in config.lora_targets.split(",")]
        elif top:  # peft needs explicit names with layers_to_transform: every Linear (GPT-2: Conv1D) in a block
            targets = sorted({n.split(".")[-1] for n, m in blocks[0].named_modules() if isinstance(m, (torch.nn.Linear, Conv1D))})
        else:
            targets = "all-linear"
        lora = LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=targets,
            layers_to_transform=list(range(n_layers - top, n_layers)) if top else None,
            layers_pattern=blocks_attribute(model) if top else None,
            fan_in_fan_out=any(isinstance(m, Conv1D) for m in blocks[0].modules()),  # the family's Conv1D stores weights transposed
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, lora)
    else:
        for p in model.parameters():
            p.requires_grad_(True)
    return model, tok


def trainable_parameters(model) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]
