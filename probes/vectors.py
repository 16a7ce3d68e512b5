"""`ConceptVectors`: per-layer concept vectors (v_mold, v_gold, v_path, or any named set).

Stored as `vectors.safetensors` (one tensor per name, shape [n_layers, hidden]) plus
`meta.json` (model id, adapter, layer convention, counts, seed, package version, ...).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from envs.artifacts import atomic_path, atomic_write_json
from probes.layers import LAYER_CONVENTION


@dataclass
class ConceptVectors:
    vectors: dict[str, torch.Tensor]  # name -> [n_layers, hidden], float32
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        shapes = {tuple(v.shape) for v in self.vectors.values()}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2:
            raise ValueError(f"concept vectors must all be [n_layers, hidden], got shapes {shapes}")
        self.meta.setdefault("layer_convention", LAYER_CONVENTION)

    @property
    def names(self) -> list[str]:
        return list(self.vectors)

    @property
    def n_layers(self) -> int:
        return next(iter(self.vectors.values())).shape[0]

    @property
    def hidden_size(self) -> int:
        return next(iter(self.vectors.values())).shape[1]

    def get(self, name: str, layer: int | None = None) -> torch.Tensor:
        if name not in self.vectors:
            raise ValueError(f"no vector {name!r}; available: {', '.join(self.names)}")
        v = self.vectors[name]
        if layer is None:
            return v
        if not 0 <= layer < self.n_layers:
            raise ValueError(f"layer {layer} out of range 0..{self.n_layers - 1}")
        return v[layer]

    def check_model(self, model) -> None:
        """Raise ValueError if these vectors do not fit the model's hidden size / depth."""
        hidden, layers = model.config.hidden_size, model.config.num_hidden_layers
        if (hidden, layers) != (self.hidden_size, self.n_layers):
            raise ValueError(
                f"vectors are {self.n_layers} layers x {self.hidden_size} but the model has "
                f"{layers} x {hidden}; extract vectors for this model first"
            )

    def save(self, directory: str | os.PathLike) -> Path:
        """Write vectors.safetensors and meta.json atomically (temp file, then rename)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().to(torch.float32).contiguous().cpu() for k, v in self.vectors.items()}
        with atomic_path(d / "vectors.safetensors") as tmp:
            save_file(tensors, str(tmp), metadata={"layer_convention": LAYER_CONVENTION})
        atomic_write_json(d / "meta.json", self.meta)
        return d

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "ConceptVectors":
        d = Path(directory)
        if not (d / "vectors.safetensors").exists():
            raise FileNotFoundError(f"{d} has no vectors.safetensors; run 'welfare-axis extract --out {d}' first")
        meta = json.loads((d / "meta.json").read_text()) if (d / "meta.json").exists() else {}
        return cls(vectors=load_file(str(d / "vectors.safetensors")), meta=meta)

