"""`ConceptVectors`: per-layer concept vectors (v_mold, v_gold, v_path, or any named set).

Stored as `vectors.safetensors` (one tensor per name, shape [n_layers, hidden]) plus
`meta.json` (model id, adapter, layer convention, counts, seed, package version, ...).
Optionally `class_means.safetensors` (mean activation per class, [n_layers, hidden]),
used for the centred tile-mean cosines.

llama.cpp control vectors (`export_gguf`): the format repeng writes (arch "controlvector",
tensors "direction.{k}"). llama.cpp adds direction.k to the output of block k (0-based;
its loader rejects k = 0), which is the input of block k + 1, i.e. our layer k + 1
(probes/layers.py). So our layer l is written as "direction.{l - 1}", and layers 0 and 1
cannot be exported.
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
    class_means: dict[str, torch.Tensor] | None = None  # class -> mean activation [n_layers, hidden]

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
        if self.class_means:
            means = {k: v.detach().to(torch.float32).contiguous().cpu() for k, v in self.class_means.items()}
            with atomic_path(d / "class_means.safetensors") as tmp:
                save_file(means, str(tmp), metadata={"layer_convention": LAYER_CONVENTION})
        atomic_write_json(d / "meta.json", self.meta)
        return d

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "ConceptVectors":
        d = Path(directory)
        if not (d / "vectors.safetensors").exists():
            raise FileNotFoundError(f"{d} has no vectors.safetensors; run 'welfare-axis extract --out {d}' first")
        meta = json.loads((d / "meta.json").read_text()) if (d / "meta.json").exists() else {}
        means_file = d / "class_means.safetensors"
        means = load_file(str(means_file)) if means_file.exists() else None
        return cls(vectors=load_file(str(d / "vectors.safetensors")), meta=meta, class_means=means)

    def export_gguf(
        self, name: str, path: str | os.PathLike, layers: list[int] | None = None, scale: float = 1.0, model_hint: str | None = None
    ) -> Path:
        """Write vector `name` at `layers` (default: 2..L-1) as a llama.cpp control-vector GGUF.

        Tensor "direction.{l - 1}" holds our layer l (llama.cpp applies direction.k at block
        k's output = the input of block k + 1); layers 0 and 1 are refused (llama.cpp cannot
        steer the embeddings or block 0's output). `model_hint` defaults to the
        model id in meta (llama.cpp only uses it as a hint, e.g. "llama").
        """
        import gguf

        layers = list(range(2, self.n_layers)) if layers is None else list(layers)
        if not layers:
            raise ValueError("no layers to export")
        for layer in layers:
            if layer < 2:
                raise ValueError(f"layer {layer} cannot be exported: llama.cpp control vectors start at block 1's output, our layer 2")
            self.get(name, layer)  # range check
        hint = model_hint or str((self.meta.get("model") or {}).get("model_id") or "llama")
        path = Path(path)
        with atomic_path(path, suffix=".gguf") as tmp:
            writer = gguf.GGUFWriter(str(tmp), "controlvector")
            writer.add_string("controlvector.model_hint", hint)
            writer.add_uint32("controlvector.layer_count", len(layers))
            for layer in layers:
                v = (self.get(name, layer).detach().to(torch.float32).cpu() * scale).numpy()
                writer.add_tensor(f"direction.{layer - 1}", v)
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
            writer.close()
        return path

