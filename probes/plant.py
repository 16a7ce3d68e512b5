"""A planted axis: the pipeline's positive and negative control.

`plant(model, tokenizer, spec)` makes a maze-naive model behave, at one layer, like a model
whose training wrote a known direction e into its residual stream: at the direction-letter
token of every maze move (the token a probe reads), +s e is added when the move enters Gold,
-s e when it enters Mold, nothing for Path, with a per-move size s = max(0, 1 + noise x z)
(z a standard normal fixed by the seed and the text up to the move, so the same text is always
planted alike). The outcome is read from the rendered maze text (the user turn before the move
names the tile in every direction), so scripted trajectories work without any training.

The valence e is made from a source independent of everything it validates: VADER-lexicon
words (`probes.emotion.lexicon_valence`), not the emotion stories that claim 3 reads and the
steering positive control is built from. It is planted at a layer no fixed-layer claim reads
(`plant_layer`), so the fixed-layer claims see it only as the residual stream carries it up.
A random e of the same norm is the negative control: it is an axis (claims 1 and 4 may see
it) but not a valence axis (claims 3 and 5 must not). The plant is added at the input of block
`spec.layer` (probes/layers.py), so it is present at that layer and, carried by the residual
stream, above it.
"""

from __future__ import annotations

import json
import re
import weakref
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from core.artifacts import atomic_path, atomic_write_json
from envs import MazeConfig
from envs.maze import _CLAUSES
from envs.parse import CARDINAL_LETTERS, RELATIVE_LETTERS
from probes.catalog import PLANT_KINDS
from probes.layers import register_layer_hook
from training.chat import render_chat
from training.structure import replace_block_hidden


@dataclass
class PlantSpec:
    kind: str  # "valence" | "random"
    layer: int
    direction: torch.Tensor  # [H], the e added (+e on Gold moves, -e on Mold moves)
    maze: dict = field(default_factory=dict)  # MazeConfig.to_dict(): tile symbols and phrasing
    info: dict = field(default_factory=dict)  # how e was made (source, norm rule, seed)
    noise: float = 0.0  # per-move relative SD of the plant's size (0: exactly +-e)
    seed: int = 0  # draws the per-move sizes

    def save(self, directory: str | Path) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        with atomic_path(d / "plant.safetensors") as tmp:
            save_file({"direction": self.direction.detach().float().contiguous().cpu()}, str(tmp))
        atomic_write_json(d / "plant.json", {"kind": self.kind, "layer": self.layer, "maze": self.maze, "info": self.info,
                                             "norm": float(self.direction.norm()), "noise": self.noise, "seed": self.seed})
        return d

    @classmethod
    def load(cls, directory: str | Path) -> "PlantSpec":
        d = Path(directory)
        if not (d / "plant.json").exists() or not (d / "plant.safetensors").exists():
            raise FileNotFoundError(f"{d} has no plant.json/plant.safetensors; the planted run's 'plant' stage did not finish")
        meta = json.loads((d / "plant.json").read_text())
        return cls(meta["kind"], int(meta["layer"]), load_file(str(d / "plant.safetensors"))["direction"], meta.get("maze") or {},
                   meta.get("info") or {}, float(meta.get("noise", 0.0)), int(meta.get("seed", 0)))


class _MoveOutcomes:
    """Per token, +s / -s / 0 for a move letter that enters Gold / Mold / anything else; s = 1 without noise."""

    def __init__(self, tokenizer, maze: MazeConfig, noise: float = 0.0, seed: int = 0):
        self.tok, self.noise, self.seed = tokenizer, noise, seed
        probe = [{"role": "user", "content": "x"}]
        header = render_chat(tokenizer, probe, add_generation_prompt=True)[len(render_chat(tokenizer, probe)):]
        self.header = tokenizer(header, add_special_tokens=False)["input_ids"]
        letters = CARDINAL_LETTERS if maze.phrasing == "cardinal" else RELATIVE_LETTERS
        self.letters = {tokenizer(x, add_special_tokens=False)["input_ids"][0]: i for i, x in enumerate(letters)}
        symbols = maze.tile_symbols.as_dict()
        self.sign = {symbols["gold"]: 1.0, symbols["mold"]: -1.0}
        self.clauses = [re.compile(re.escape(c) + r" (.+?)(?:;|\.|$)") for c in _CLAUSES[maze.phrasing]]

    def signs(self, input_ids: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(input_ids.shape, dtype=torch.float32)
        n = len(self.header)
        for b, row in enumerate(input_ids.tolist()):
            prev = 0
            for t in range(len(row) - n):
                if row[t : t + n] != self.header:
                    continue
                letter = row[t + n]
                if letter in self.letters:
                    window = self.tok.decode(row[prev:t]).lower()
                    d = self.letters[letter]
                    found = self.clauses[d].findall(window)
                    if found:
                        out[b, t + n] = self.sign.get(found[-1].strip(), 0.0) * self.size(row[: t + n + 1])
                prev = t + n
        return out

    def size(self, prefix: list[int]) -> float:
        if not self.noise:
            return 1.0
        z = np.random.default_rng([self.seed, zlib.crc32(np.asarray(prefix, dtype=np.int64).tobytes())]).standard_normal()
        return max(0.0, 1.0 + self.noise * float(z))


_PLANTED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # model -> its plant, kept beside the model, not on it


def plant(model, tokenizer, spec: PlantSpec):
    """Attach the planted axis to `model` (in place; returns it); `planted_info(model)` then describes it."""
    outcomes = _MoveOutcomes(tokenizer, MazeConfig(**spec.maze) if spec.maze else MazeConfig(), spec.noise, spec.seed)
    e = spec.direction.float()
    state = {"signs": None}

    def read_ids(_module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        state["signs"] = None if ids is None else outcomes.signs(ids.cpu())

    def add(h, args, kwargs):
        s = state["signs"]
        if s is None or tuple(s.shape) != tuple(h.shape[:2]) or not s.any():
            return None
        return replace_block_hidden(args, kwargs, h + s.to(h.device, h.dtype)[..., None] * e.to(h.device, h.dtype))

    model.register_forward_pre_hook(read_ids, with_kwargs=True)
    register_layer_hook(model, spec.layer, add)
    _PLANTED[model] = {"kind": spec.kind, "layer": spec.layer, "norm": float(e.norm()), "noise": spec.noise, **spec.info}
    return model


def planted_info(model) -> dict | None:
    """How `plant` planted an axis into `model` (kind, layer, norm, noise, source), or None for an unplanted model."""
    return _PLANTED.get(model)


def plant_layer(n_layers: int, protocol=None) -> int:
    """floor(L/2), or the nearest layer below it that no fixed-layer claim reads (at least 1)."""
    from probes.protocol import PROTOCOL

    fixed = (protocol or PROTOCOL).fixed
    read = {fixed.logit_lens_layer(n_layers), fixed.emotion_layer(n_layers)}
    layer = n_layers // 2
    while layer > 1 and layer in read:
        layer -= 1
    return layer


def make_plant(model, tokenizer, kind: str, naive_means: dict, maze: MazeConfig, layer: int | None = None, scale: float = 1.0,
               seed: int = 0, batch_size: int = 16, noise: float = 0.5) -> PlantSpec:
    """The planted direction e for `kind` ("valence" or "random") at `layer` (default `plant_layer`).

    Norm rule: in channel-standardised units (per-channel SD on neutral text)
    ||e|| = scale x ||mean(Gold) - mean(Mold)|| of the naive model's extraction at that layer, so
    the plant is as large as the natural Gold/Mold difference. The valence e is the VADER-lexicon
    valence direction (`probes.emotion.lexicon_valence`); the random e a seeded Gaussian of the same raw norm.
    """
    from probes.capture import channel_moments
    from probes.emotion import lexicon_valence, load_neutral

    if kind not in PLANT_KINDS:
        raise ValueError(f"unknown plant {kind!r}; use one of {', '.join(PLANT_KINDS)}")
    n_layers = model.config.num_hidden_layers
    layer = plant_layer(n_layers) if layer is None else layer
    if not 1 <= layer < n_layers:
        raise ValueError(f"plant layer must be in 1..{n_layers - 1}, got {layer}")
    sd = channel_moments(model, tokenizer, load_neutral(), [layer], batch_size=batch_size)[1][0].float()
    inv = torch.where(sd > 1e-6, 1.0 / sd.clamp(min=1e-6), torch.zeros_like(sd))
    natural = (naive_means["gold"][layer] - naive_means["mold"][layer]).float()
    target = scale * float((natural * inv).norm())
    valence = torch.from_numpy(lexicon_valence(model, tokenizer, layer, batch_size)).float()
    e = valence / float((valence * inv).norm()) * target
    if kind == "random":
        g = torch.Generator().manual_seed(seed + 314159)
        r = torch.randn(e.shape[0], generator=g)
        e = r / r.norm() * e.norm()
    info = {"source": "VADER-lexicon valence (probes.emotion.lexicon_valence)" if kind == "valence" else "Gaussian",
            "scale": scale, "seed": seed, "standardised_norm": float((e * inv).norm()),
            "natural_gold_minus_mold_standardised_norm": float((natural * inv).norm()),
            "norm_rule": "||e / sd|| = scale x ||(mean Gold - mean Mold) / sd|| of the naive extraction at the plant layer"
                         + ("; random: a Gaussian direction with the valence e's raw norm" if kind == "random" else "")}
    return PlantSpec(kind, layer, e, maze.to_dict(), info, noise, seed)
