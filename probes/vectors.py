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
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from core.artifacts import atomic_path, atomic_write_json
from probes.layers import LAYER_CONVENTION


def read_json(path: str | os.PathLike, fix: str):
    """The parsed JSON of `path`; FileNotFoundError/ValueError naming the file and how to fix it otherwise."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist; {fix}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read {path} ({getattr(e, 'strerror', None) or e}); {fix}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e.msg}, line {e.lineno} column {e.colno}); {fix}") from None


def _read_safetensors(path: Path, fix: str) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file, each finite; ValueError naming the file otherwise."""
    try:
        tensors = load_file(str(path))
    except Exception as e:  # SafetensorError (empty, truncated, garbage), OSError
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ValueError(f"{path} is not a readable safetensors file ({reason}); {fix}") from None
    if not tensors:
        raise ValueError(f"{path} holds no tensors; {fix}")
    _check_finite(tensors, path, fix)
    return tensors


def _check_finite(tensors: dict[str, torch.Tensor], path: Path, fix: str) -> None:
    for name, t in tensors.items():
        if not t.is_floating_point():
            raise ValueError(f"{path}: tensor {name!r} is {str(t.dtype).removeprefix('torch.')}, not floating point; {fix}")
        bad = ~torch.isfinite(t)
        if bad.any():
            where = sorted({int(i) for i in bad.nonzero()[:, 0]})[:5] if t.dim() > 1 else None
            at = f" (layers {', '.join(map(str, where))})" if where is not None else ""
            raise ValueError(f"{path}: tensor {name!r} has NaN or infinite values{at}; {fix}")


def load_tensor_file(path: str | os.PathLike) -> torch.Tensor:
    """One steering vector from a .pt or .safetensors file: [hidden] or [n_layers, hidden], finite, float32.

    ValueError (one line: the file, what is wrong, how to fix it) for an empty, garbage or truncated
    file, a dict or other object instead of a tensor, several tensors, the wrong rank, or NaN/inf."""
    path = Path(path)
    fix = "save one tensor of shape [hidden] or [n_layers, hidden] (torch.save(v, path) or safetensors), or pass a vectors folder"
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is an empty file; {fix}")
    if path.suffix == ".pt":
        try:
            with warnings.catch_warnings():  # torch's notes on odd pickles would be extra lines before the error
                warnings.simplefilter("ignore")
                t = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # EOFError (empty), UnpicklingError / RuntimeError (garbage, truncated)
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise ValueError(f"{path} is not a readable torch file ({type(e).__name__}: {reason[:120]}); {fix}") from None
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{path} holds a {type(t).__name__}, not a tensor; {fix}")
        tensors = {"tensor": t}
    elif path.suffix == ".safetensors":
        tensors = _read_safetensors(path, fix)
        if len(tensors) != 1:
            raise ValueError(f"{path} holds {len(tensors)} tensors ({', '.join(list(tensors)[:5])}); {fix}")
    else:
        raise ValueError(f"{path}: unknown vector file type {path.suffix or '(none)'!r}; use a .pt or .safetensors file, or a vectors folder")
    (name, t), = tensors.items()
    if t.dim() not in (1, 2) or t.numel() == 0:
        raise ValueError(f"{path}: tensor {name!r} has shape {tuple(t.shape)}; {fix}")
    _check_finite({name: t}, path, fix)
    return t.detach().to(torch.float32).clone()


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
        """A folder written by `save` (or 'welfare-axis extract'), validated: readable files, one
        [n_layers, hidden] shape, finite values, and meta.json agreeing with the tensors' shape.
        FileNotFoundError/ValueError (one line naming the file and how to fix it) otherwise."""
        d = Path(directory)
        if not (d / "vectors.safetensors").exists():
            raise FileNotFoundError(f"{d} has no vectors.safetensors; run 'welfare-axis extract --out {d}' first")
        fix = f"re-run 'welfare-axis extract --out {d}'"
        meta = read_json(d / "meta.json", fix) if (d / "meta.json").exists() else {}
        if not isinstance(meta, dict) or not isinstance(meta.get("model") or {}, dict):
            raise ValueError(f"{d / 'meta.json'} is not a vectors meta.json (expected an object with a 'model' object); {fix}")
        vectors = _read_safetensors(d / "vectors.safetensors", fix)
        shapes = {tuple(v.shape) for v in vectors.values()}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2 or 0 in next(iter(shapes)):
            raise ValueError(f"{d / 'vectors.safetensors'}: vectors must all be [n_layers, hidden], got shapes {sorted(shapes)}; {fix}")
        n_layers, hidden = next(iter(shapes))
        for where, src in (("", meta), ("model.", meta.get("model") or {})):
            for key, actual in (("n_layers", n_layers), ("hidden_size", hidden)):
                if key in src and src[key] != actual:
                    raise ValueError(f"{d / 'meta.json'} says {where}{key} = {src[key]!r} but vectors.safetensors is "
                                     f"{n_layers} layers x {hidden}; the folder is inconsistent: {fix}")
        means_file = d / "class_means.safetensors"
        means = _read_safetensors(means_file, fix) if means_file.exists() else None
        if means is not None and any(tuple(m.shape) != (n_layers, hidden) for m in means.values()):
            raise ValueError(f"{means_file}: class means are not {n_layers} x {hidden} like vectors.safetensors; {fix}")
        return cls(vectors=vectors, meta=meta, class_means=means)

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

