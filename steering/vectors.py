"""Which vectors to steer with: trained v_*, norm-matched naive controls u_*, random directions.

Naming (used in every eval's output): "v_gold", "v_mold" (trained model's concept vectors),
"u_gold", "u_mold" (the maze-naive model's vectors, rescaled to ||v_*|| at the steering
layer, so a given alpha adds the same norm), "random_mold" (a seeded Gaussian direction,
normalised, scaled to ||v_mold||), and "user" for a plain tensor.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from envs import TILE_KINDS
from probes.vectors import ConceptVectors, read_json



@dataclass
class SteeringVector:
    name: str  # e.g. "v_mold", "u_gold", "random_mold"
    vector: torch.Tensor  # [hidden], float32; alpha multiplies this
    layer: int
    kind: str  # "trained" | "control" | "random" | "user"
    concept: str | None = None
    source: dict | None = None  # meta.json of the ConceptVectors it came from (for provenance)

    @property
    def norm(self) -> float:
        return float(self.vector.norm())

    def info(self) -> dict:
        return {"name": self.name, "layer": self.layer, "kind": self.kind, "concept": self.concept, "norm": self.norm}


def default_layer(n_layers: int) -> int:
    """The study's tile-mean-cosine layer (the protocol's fixed emotion layer, floor(2L/3)), used when no layer choice is given."""
    from probes.protocol import PROTOCOL

    return PROTOCOL.fixed.emotion_layer(n_layers)


def load_layer_choice(analysis_dir: str | os.PathLike) -> dict[str, int]:
    """{"mold": l, "gold": l, "path": l} from the probes' `layer_choice.json`."""
    path = Path(analysis_dir) / "layer_choice.json"
    fix = "re-run 'welfare-axis analyze' or pass --layer"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found; run 'welfare-axis analyze' first or pass --layer")
    raw = read_json(path, fix)
    choice = raw.get("layers", raw) if isinstance(raw, dict) else raw
    if not isinstance(choice, dict):
        raise ValueError(f"{path} is not a layer choice (expected an object like {{\"mold\": 16, \"gold\": 16}}); {fix}")
    out = {}
    for k, v in choice.items():
        if k in TILE_KINDS:
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{path}: layer {k!r} is {v!r}, not a layer number; {fix}")
            out[k] = v
    if not out:
        raise ValueError(f"{path} names no layer for {', '.join(TILE_KINDS)}; {fix}")
    return out


def resolve_layers(layer: int | dict | None, n_layers: int, concepts=TILE_KINDS) -> dict[str, int]:
    """Per-concept steering layer from an int (all concepts), a dict, or None (floor(2L/3))."""
    if layer is None:
        out = {c: default_layer(n_layers) for c in concepts}
    elif isinstance(layer, int):
        out = {c: layer for c in concepts}
    else:
        missing = [c for c in concepts if c not in layer]
        if missing:
            fallback = default_layer(n_layers)
            layer = {**layer, **{c: layer.get("mold", fallback) for c in missing}}
        out = {c: int(layer[c]) for c in concepts}
    for c, l in out.items():
        if not 0 <= l < n_layers:
            raise ValueError(f"layer {l} for {c} out of range 0..{n_layers - 1}")
    return out


def random_direction(hidden: int, norm: float, seed: int) -> torch.Tensor:
    """A seeded Gaussian direction, normalised, then scaled to `norm`."""
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(hidden, generator=g)
    return d / d.norm() * norm


def norm_matched(u: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """u rescaled to ||target||."""
    n = u.norm()
    if n == 0:
        raise ValueError("control vector has zero norm; cannot norm-match it")
    return u / n * target.norm()


def steering_set(
    vectors: ConceptVectors,
    control: ConceptVectors | None,
    layers: int | dict | None,
    concepts: tuple[str, ...] = ("gold", "mold"),
    random_for: tuple[str, ...] = ("mold",),
    seed: int = 0,
) -> list[SteeringVector]:
    """The vectors an eval sweeps: v_c for each concept, u_c norm-matched, random_c norm-matched."""
    by_layer = resolve_layers(layers, vectors.n_layers, concepts=tuple(dict.fromkeys((*concepts, *random_for))))
    out = []
    for c in concepts:
        v = vectors.get(c, by_layer[c]).float()
        out.append(SteeringVector(f"v_{c}", v, by_layer[c], "trained", c, vectors.meta))
    if control is not None:
        if (control.n_layers, control.hidden_size) != (vectors.n_layers, vectors.hidden_size):
            raise ValueError("control vectors and trained vectors have different shapes; extract both from the same base model")
        for c in concepts:
            v = vectors.get(c, by_layer[c]).float()
            u = norm_matched(control.get(c, by_layer[c]).float(), v)
            out.append(SteeringVector(f"u_{c}", u, by_layer[c], "control", c, control.meta))
    for i, c in enumerate(random_for):
        v = vectors.get(c, by_layer[c]).float()
        out.append(SteeringVector(f"random_{c}", random_direction(vectors.hidden_size, float(v.norm()), seed + 7919 * (i + 1)), by_layer[c], "random", c))
    return out


def user_vector(x: torch.Tensor | ConceptVectors, layer: int, name: str | None = None) -> SteeringVector:
    """A SteeringVector from a plain tensor ([hidden] or [n_layers, hidden]) or ConceptVectors + name."""
    if isinstance(x, ConceptVectors):
        if name is None:
            raise ValueError("pass name= to pick a vector from ConceptVectors")
        return SteeringVector(f"v_{name}", x.get(name, layer).float(), layer, "trained", name, x.meta)
    t = torch.as_tensor(x, dtype=torch.float32)
    if t.dim() == 2:
        t = t[layer]
    if t.dim() != 1:
        raise ValueError(f"a steering tensor must be [hidden] or [n_layers, hidden], got {tuple(t.shape)}")
    return SteeringVector(name or "user", t, layer, "user", None)
