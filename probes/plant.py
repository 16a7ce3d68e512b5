"""A planted axis: the pipeline's positive and negative control.

`plant(model, tokenizer, spec)` makes a maze-naive model behave, at one layer, like a model
whose training wrote a known direction e into its residual stream: at the direction-letter
token of every maze move (the token a probe reads), +e is added when the move enters Gold,
-e when it enters Mold, nothing for Path. The outcome is read from the rendered maze text
(the user turn before the move names the tile in every direction), so scripted
trajectories work without any training.

With e = a valence direction of the naive model (positive- minus negative-emotion stories,
from story half "a", so claim 3 can be tested on half "b"), a correct pipeline must report
the claims reproduced; with e = a random direction of the same norm it must not report the
valence claims (3, 5). The plant is added at layer `spec.layer` (the input of that block,
probes/layers.py), so it is present at that layer and, carried by the residual stream,
above it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from envs import MazeConfig
from envs.artifacts import atomic_path, atomic_write_json
from envs.maze import _CLAUSES
from envs.parse import CARDINAL_LETTERS, RELATIVE_LETTERS
from probes.layers import register_layer_hook
from training.chat import render_chat
from training.modeling import replace_block_hidden

PLANT_KINDS = ("valence", "random")


@dataclass
class PlantSpec:
    kind: str  # "valence" | "random"
    layer: int
    direction: torch.Tensor  # [H], the e added (+e on Gold moves, -e on Mold moves)
    maze: dict = field(default_factory=dict)  # MazeConfig.to_dict(): tile symbols and phrasing
    info: dict = field(default_factory=dict)  # how e was made (stories half, norm rule, seed)

    def save(self, directory: str | Path) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        with atomic_path(d / "plant.safetensors") as tmp:
            save_file({"direction": self.direction.detach().float().contiguous().cpu()}, str(tmp))
        atomic_write_json(d / "plant.json", {"kind": self.kind, "layer": self.layer, "maze": self.maze, "info": self.info,
                                             "norm": float(self.direction.norm())})
        return d

    @classmethod
    def load(cls, directory: str | Path) -> "PlantSpec":
        d = Path(directory)
        if not (d / "plant.json").exists() or not (d / "plant.safetensors").exists():
            raise FileNotFoundError(f"{d} has no plant.json/plant.safetensors; the planted run's 'plant' stage did not finish")
        meta = json.loads((d / "plant.json").read_text())
        return cls(meta["kind"], int(meta["layer"]), load_file(str(d / "plant.safetensors"))["direction"], meta.get("maze") or {},
                   meta.get("info") or {})


class _MoveOutcomes:
    """Per token, +1 / -1 / 0 for a move letter that enters Gold / Mold / anything else."""

    def __init__(self, tokenizer, maze: MazeConfig):
        self.tok = tokenizer
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
                        out[b, t + n] = self.sign.get(found[-1].strip(), 0.0)
                prev = t + n
        return out


def plant(model, tokenizer, spec: PlantSpec):
    """Attach the planted axis to `model` (in place; returns it). Its meta records the plant."""
    outcomes = _MoveOutcomes(tokenizer, MazeConfig(**spec.maze) if spec.maze else MazeConfig())
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
    model.welfare_plant = {"kind": spec.kind, "layer": spec.layer, "norm": float(e.norm()), **spec.info}
    return model


def make_plant(model, tokenizer, kind: str, naive_means: dict, maze: MazeConfig, layer: int | None = None, scale: float = 1.0,
               seed: int = 0, batch_size: int = 16, stories: str | None = None) -> PlantSpec:
    """The planted direction e for `kind` ("valence" or "random") at `layer` (default floor(2L/3)).

    Norm rule: in channel-standardised units (per-channel SD on neutral text)
    ||e|| = scale x ||mean(Gold) - mean(Mold)|| of the naive model's extraction at that layer, so
    the plant is as large as the natural Gold/Mold difference where the verdicts look. The
    valence e (probes.emotion.valence_directions: story half "a", neutral-text PCs projected out like
    the emotion vectors') uses story half "a" only; the random e is a seeded Gaussian of the same raw norm.
    """
    from probes.capture import channel_moments
    from probes.emotion import load_neutral, valence_directions

    if kind not in PLANT_KINDS:
        raise ValueError(f"unknown plant {kind!r}; use one of {', '.join(PLANT_KINDS)}")
    n_layers = model.config.num_hidden_layers
    layer = (2 * n_layers) // 3 if layer is None else layer
    if not 1 <= layer < n_layers:
        raise ValueError(f"plant layer must be in 1..{n_layers - 1}, got {layer}")
    sd = channel_moments(model, tokenizer, load_neutral(), [layer], batch_size=batch_size)[1][0].float()
    inv = torch.where(sd > 1e-6, 1.0 / sd.clamp(min=1e-6), torch.zeros_like(sd))
    natural = (naive_means["gold"][layer] - naive_means["mold"][layer]).float()
    target = scale * float((natural * inv).norm())
    valence = torch.from_numpy(valence_directions(model, tokenizer, [layer], "a", batch_size, stories)[layer]).float()
    e = valence / float((valence * inv).norm()) * target
    if kind == "random":
        g = torch.Generator().manual_seed(seed + 314159)
        r = torch.randn(e.shape[0], generator=g)
        e = r / r.norm() * e.norm()
    info = {"stories_half": "a", "scale": scale, "seed": seed, "standardised_norm": float((e * inv).norm()),
            "natural_gold_minus_mold_standardised_norm": float((natural * inv).norm()),
            "norm_rule": "||e / sd|| = scale x ||(mean Gold - mean Mold) / sd|| of the naive extraction at the plant layer"
                         + ("; random: a Gaussian direction with the valence e's raw norm" if kind == "random" else "")}
    return PlantSpec(kind, layer, e, maze.to_dict(), info)
