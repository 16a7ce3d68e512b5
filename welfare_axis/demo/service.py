"""The demo's model-side state and operations, with no web code (tested without a browser).

`DemoService` holds one model, its vectors (trained v_*, naive u_*, a random direction,
uploads), a lock, and the operations the UI and the HTTP API share: stream a steered and an
unsteered reply side by side, score an alpha sweep, play the maze, export a vector.

Units: every direction is unit-normalised at the chosen layer and alpha 1 adds `unit_ratio`
(0.1) x the mean residual norm at that layer, the unit of claim 5's screen
(steering/screen.py), so one alpha means the same push for v_*, u_* (norm-matched by
construction), random and uploaded vectors, and the alphas of a run's evals carry over.

Streaming: both replies are one batch of two identical prompts, row 0 with a zero delta and
row 1 with the steering delta, through `Steerer` (per-row deltas). Each row samples from its own
generator seeded with the same seed, so "same seed" means the same random draws in both panes
and alpha = 0 reproduces the unsteered reply exactly. A hand-written loop rather than
`model.generate` with a transformers streamer, because generate samples a batch from one global
RNG (the rows would get different draws) and we need the residual at every step for the meter.

The welfare meter: token t is scored by the projection, onto the unit welfare axis, of the
residual entering block `layer` at the position that predicted it (the state the model chose
t from), read before the steering add: blocks below `layer` are never steered, so the steered
pane's meter moves only through what the steered reply has said so far, not by the constant
alpha * (v . axis) that the add itself contributes.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from core.fields import convert
from probes.layers import LAYER_CONVENTION, register_layer_hook
from probes.vectors import ConceptVectors
from steering.steerer import Steerer, decode_steps, encode_chat
from steering.vectors import default_layer, random_direction
from training.models import model_info, pad_token_id
from welfare_axis import __version__
from welfare_axis.demo.shipped import VectorSource


class DemoError(ValueError):
    """Bad input from the UI or the API: one line that says what to fix (the server carries on)."""


MAX_NEW_TOKENS = 256
MAX_ALPHA = 8.0  # |alpha| the page and the API accept: alpha 8 already adds 0.8 x the residual norm


@dataclass
class Reply:
    """One pane: token strings, their ids, and the welfare-axis projection per token."""

    ids: list[int] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    projections: list[float] = field(default_factory=list)
    done: bool = False

    @property
    def text(self) -> str:
        return "".join(self.tokens)

    def to_dict(self) -> dict:
        return {"text": self.text, "tokens": self.tokens, "projections": [round(p, 4) for p in self.projections]}


@dataclass
class SteerRequest:
    """A validated steering request; `specs` is [(vector name, alpha), ...] (several vectors add up)."""

    prompt: str
    specs: list[tuple[str, float]]
    layer: int
    temperature: float = 0.0
    seed: int = 0
    max_new_tokens: int = 48
    meter: str = "welfare"  # "welfare" (v_gold - v_mold) or a vector name


def _number(x, what: str) -> float:
    return _field(x, float, what)


def _field(x, hint, what: str):
    """The value as `hint`, by the conversion every config field uses (core.fields.convert)."""
    try:
        return convert(x, hint, what)
    except ValueError as e:
        raise DemoError(str(e)) from None


def _alpha(x, what: str = "alpha") -> float:
    v = _number(x, what)
    if abs(v) > MAX_ALPHA:
        raise DemoError(f"{what} must be in -{MAX_ALPHA:g}..{MAX_ALPHA:g} (alpha 1 adds a tenth of the residual norm), got {x!r}")
    return v


def _integer(x, what: str) -> int:
    return _field(x, int, what)


class DemoService:
    def __init__(self, model, tokenizer, source: VectorSource):
        self.model, self.tokenizer, self.source = model, tokenizer, source
        self.lock = threading.Lock()  # one generation at a time: concurrent hooks on one model would mix
        self.n_layers = model.config.num_hidden_layers
        self.hidden = model.config.hidden_size
        for cv in (source.vectors, source.control):
            if cv is not None:
                try:
                    cv.check_model(model)
                except ValueError as e:
                    raise DemoError(str(e)) from None
        self.uploads: dict[str, torch.Tensor] = {}  # name -> [n_layers, hidden]
        self.default_layer = self._default_layer()
        self._norms: np.ndarray | None = None
        self._policies: dict[str, tuple] = {}

    # -- vectors ---------------------------------------------------------------------------------
    def _default_layer(self) -> int:
        s = self.source
        for layer in (s.best_layer, s.layer_choice.get("mold")):
            if layer is not None and 0 < int(layer) < self.n_layers:
                return int(layer)
        return default_layer(self.n_layers)

    def vector_names(self) -> list[str]:
        names = [f"v_{c}" for c in self.source.vectors.names]
        if self.source.control is not None:
            names += [f"u_{c}" for c in self.source.control.names if c in self.source.vectors.names]
        return names + ["random", *self.uploads]

    def residual_norm(self, layer: int) -> float:
        """Mean residual norm entering block `layer` over assistant tokens of a few welfare prompts (computed once)."""
        if self._norms is None:
            from steering.prompts import WELFARE_PROMPTS
            from steering.screen import residual_norms

            with self.lock:
                self._norms = residual_norms(self.model, self.tokenizer, list(WELFARE_PROMPTS[:6]), range(self.n_layers))
        return float(self._norms[layer])

    def check_layer(self, layer) -> int:
        layer = _integer(layer, "layer")
        if not 0 <= layer < self.n_layers:
            raise DemoError(f"layer {layer} out of range 0..{self.n_layers - 1} (layer l = input of decoder block l)")
        return layer

    def raw_vector(self, name: str, layer: int) -> torch.Tensor:
        """The [hidden] float32 vector `name` at `layer`, before normalisation."""
        if name in self.uploads:
            return self.uploads[name][layer]
        kind, _, concept = name.partition("_")
        if name == "random":
            return random_direction(self.hidden, 1.0, seed=7919 + layer)
        if kind == "v" and concept in self.source.vectors.names:
            return self.source.vectors.get(concept, layer).float()
        if kind == "u" and self.source.control is not None and concept in self.source.control.names:
            return self.source.control.get(concept, layer).float()
        raise DemoError(f"unknown vector {name!r}; choose one of {', '.join(self.vector_names())}")

    def direction(self, name: str, layer: int) -> torch.Tensor:
        v = self.raw_vector(name, layer)
        n = v.norm()
        if not torch.isfinite(n) or n == 0:
            raise DemoError(f"vector {name!r} is zero or not finite at layer {layer}; pick another layer or vector")
        return v / n

    def delta(self, specs: list[tuple[str, float]], layer: int) -> torch.Tensor:
        """sum_i alpha_i * unit(v_i) * unit_ratio * mean residual norm, at `layer`."""
        unit = self.source.unit_ratio * self.residual_norm(layer)
        d = torch.zeros(self.hidden)
        for name, alpha in specs:
            if alpha != 0:
                d += alpha * unit * self.direction(name, layer)
        return d

    def axis(self, meter: str, layer: int) -> torch.Tensor:
        """Unit welfare axis: v_gold - v_mold (trained vectors), or a chosen vector's direction."""
        if meter == "welfare":
            names = self.source.vectors.names
            if not {"gold", "mold"} <= set(names):
                raise DemoError("the welfare meter needs v_gold and v_mold; pick a vector for the meter instead")
            d = self.raw_vector("v_gold", layer) - self.raw_vector("v_mold", layer)
            return d / d.norm()
        return self.direction(meter, layer)

    def add_upload(self, path: str | Path) -> str:
        """Load a .safetensors / .pt / llama.cpp GGUF control vector; returns its name in the picker."""
        path = Path(path)
        t = load_vector_file(path, self.n_layers)
        if t.shape[-1] != self.hidden:
            raise DemoError(f"{path.name}: vectors of size {t.shape[-1]}, but the model's hidden size is {self.hidden}")
        if t.dim() == 1:  # one vector: the same at every layer
            t = t.expand(self.n_layers, -1).clone()
        if t.shape[0] != self.n_layers:
            raise DemoError(f"{path.name}: {t.shape[0]} layers, but the model has {self.n_layers}")
        name = f"upload:{path.stem}"
        self.uploads[name] = t.float()
        return name

    # -- requests ------------------------------------------------------------------------------------
    def request(self, prompt, specs, layer=None, temperature=0.0, seed=0, max_new_tokens=48, meter="welfare") -> SteerRequest:
        """Validate raw UI / API input; raises DemoError with one line."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise DemoError("type a prompt first")
        if not self.vector_names():
            raise DemoError("no vectors loaded; start the demo with --vectors DIR or --run RUN_DIR")
        clean = []
        for row in specs or []:
            if not isinstance(row, (list, tuple)) or len(row) != 2:
                raise DemoError(f"each vector row must be (vector, alpha), got {row!r}")
            name, alpha = row
            if name in (None, ""):
                continue
            if str(name) not in self.vector_names():
                raise DemoError(f"unknown vector {name!r}; choose one of {', '.join(self.vector_names())}")
            clean.append((str(name), _alpha(alpha, f"alpha for {name}")))
        layer = self.default_layer if layer in (None, "") else self.check_layer(layer)
        temperature = _number(temperature, "temperature")
        if temperature < 0:
            raise DemoError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
        n = _integer(max_new_tokens, "max new tokens")
        if not 1 <= n <= MAX_NEW_TOKENS:
            raise DemoError(f"max new tokens must be in 1..{MAX_NEW_TOKENS}, got {n}")
        if meter not in ("welfare", *self.vector_names()):
            raise DemoError(f"unknown meter {meter!r}; use 'welfare' or a vector name")
        return SteerRequest(prompt, clean, layer, temperature, _integer(seed, "seed"), n, meter)

    # -- generation -----------------------------------------------------------------------------------
    def stream(self, req: SteerRequest, use_cache: bool = True) -> Iterator[tuple[Reply, Reply]]:
        """Yield (unsteered, steered) after every generated token; holds the lock throughout."""
        delta = self.delta(req.specs, req.layer)
        axis = self.axis(req.meter, req.layer)
        with self.lock:
            yield from stream_pair(self.model, self.tokenizer, req.prompt, delta, req.layer, axis,
                                   req.temperature, req.seed, req.max_new_tokens, use_cache)

    def steer(self, req: SteerRequest, use_cache: bool = True) -> dict:
        """Both complete replies with their projections (the HTTP API's answer)."""
        base = steered = Reply()
        for base, steered in self.stream(req, use_cache):
            pass
        return {"unsteered": base.to_dict(), "steered": steered.to_dict(), "layer": req.layer, "vectors": req.specs,
                "meter": req.meter, "alpha_unit_norm": self.source.unit_ratio * self.residual_norm(req.layer),
                "seed": req.seed, "temperature": req.temperature}

    def sweep(self, prompt: str, name: str, alphas, layer=None, temperature=0.0, seed=0, max_new_tokens=40) -> list[dict]:
        """One reply and its sentiment score (steering/scoring.py) per alpha, all in one batch."""
        from steering.scoring import sentiment_score
        from steering.steerer import steered_generate

        alphas = [_alpha(a) for a in alphas]
        if not alphas:
            raise DemoError("give at least one alpha, e.g. -8,-4,0,4,8")
        req = self.request(prompt, [(name, 1.0)], layer, temperature, seed, max_new_tokens)
        one = self.delta(req.specs, req.layer)
        deltas = torch.stack([a * one for a in alphas])
        with self.lock:
            replies = steered_generate(self.model, self.tokenizer, [prompt] * len(alphas), deltas, req.layer, 1.0,
                                       max_new_tokens=req.max_new_tokens, temperature=req.temperature, seed=req.seed)
        return [{"alpha": a, "reply": r, "sentiment": sentiment_score(r)} for a, r in zip(alphas, replies)]

    # -- export ----------------------------------------------------------------------------------------
    def export(self, specs, layer, out_dir: str | Path) -> tuple[Path, Path]:
        """The current (combined) steering vector as a llama.cpp control vector and as safetensors + metadata.

        The saved vector is the delta itself (alpha and unit included), so llama.cpp at scale 1
        adds what the demo adds.
        """
        from safetensors.torch import save_file

        req = self.request("export", specs, layer)
        if not req.specs:
            raise DemoError("pick a vector and a non-zero alpha to export")
        if req.layer < 2:
            raise DemoError("llama.cpp control vectors cannot steer layers 0 and 1; pick layer 2 or higher")
        d = self.delta(req.specs, req.layer)
        meta = {
            "kind": "welfare_axis_demo_steering_vector", "layer": req.layer, "layer_convention": LAYER_CONVENTION,
            "vectors": [[n, a] for n, a in req.specs], "unit_ratio": self.source.unit_ratio,
            "alpha_unit_norm": self.source.unit_ratio * self.residual_norm(req.layer),
            "model": getattr(model_info(self.model), "to_dict", lambda: {})(),
            "package_version": __version__, "source": self.source.provenance,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        stem = "steer_" + "_".join(f"{n.replace(':', '-')}{a:+g}" for n, a in req.specs) + f"_L{req.layer}"
        full = torch.zeros(self.n_layers, self.hidden)
        full[req.layer] = d
        gguf = ConceptVectors({"steer": full}, meta=meta).export_gguf("steer", out / f"{stem}.gguf", layers=[req.layer])
        st = out / f"{stem}.safetensors"
        save_file({"direction": d.contiguous()}, str(st), metadata={"meta": json.dumps(meta), "layer": str(req.layer),
                                                                   "layer_convention": LAYER_CONVENTION})
        return gguf, st


# -- streaming decode -----------------------------------------------------------------------------------
def _append(tokenizer, replies, tokens: list[int], projections: list[float], eos: int) -> None:
    """Each pane's new token (its text piece as decoding the reply so far adds it) and its meter reading."""
    for r, t, p in zip(replies, tokens, projections):
        if r.done:
            continue
        if t == eos:
            r.done = True
            continue
        before = tokenizer.decode(r.ids, skip_special_tokens=True)
        r.ids.append(t)
        r.tokens.append(tokenizer.decode(r.ids, skip_special_tokens=True)[len(before):])
        r.projections.append(float(p))


@torch.no_grad()
def stream_pair(model, tokenizer, prompt, delta: torch.Tensor, layer: int, axis: torch.Tensor, temperature: float,
                seed: int, max_new_tokens: int, use_cache: bool = True) -> Iterator[tuple[Reply, Reply]]:
    """Unsteered (row 0) and steered (row 1, + delta at `layer`) replies, yielded token by token.

    Without the KV cache every step re-runs the whole sequence, with the prefill mask extended
    over the generated tokens; it must give the same tokens (tested), which checks the
    Steerer's mask logic against its cached path.
    """
    ids, mask = encode_chat(tokenizer, prompt)
    device = next(model.parameters()).device
    seq = torch.tensor([ids, ids], device=device)
    steer_mask = torch.tensor([mask, mask], dtype=torch.bool, device=device)
    deltas = torch.stack([torch.zeros_like(delta), delta])
    axis = axis.to(device=device, dtype=torch.float32)
    gens = [torch.Generator(device=device).manual_seed(int(seed)) for _ in range(2)]
    eos = tokenizer.eos_token_id
    replies = (Reply(), Reply())
    seen: list[torch.Tensor] = []

    def meter(h, _args, _kwargs):
        # one dot per row: a batched [2, H] @ [H] may round the two rows differently, and at
        # alpha = 0 the panes' meters must be bit-identical like their tokens
        seen[:] = [[float(h[i, -1].float() @ axis) for i in range(h.shape[0])]]

    # Registered before the Steerer's hook, so it runs first and reads the residual before the add:
    # after it, the steered pane would only show the added alpha * (v . axis), a constant offset.
    handle = register_layer_hook(model, layer, meter)
    try:
        with Steerer(model, deltas, layer, 1.0) as steerer:
            steerer.set_prefill_mask(steer_mask)

            def grow(length: int) -> None:  # without the cache the generated tokens are re-run: steer them too
                steerer.set_prefill_mask(torch.cat([steer_mask, steer_mask.new_ones(2, length - steer_mask.shape[1])], dim=1))

            for token in decode_steps(model, seq, torch.ones_like(seq), max_new_tokens, temperature, eos, pad_token_id(tokenizer),
                                      gens, use_cache, grow):
                _append(tokenizer, replies, token.tolist(), seen[0], eos)
                yield replies
    finally:
        handle.remove()
    for r in replies:
        r.done = True
    yield replies


# -- vector files ----------------------------------------------------------------------------------------
def load_vector_file(path: Path, n_layers: int) -> torch.Tensor:
    """[hidden] or [n_layers, hidden] float32 from .safetensors (first tensor), .pt, or a llama.cpp GGUF.

    GGUF control vectors hold "direction.k" = the output of block k = our layer k + 1
    (probes/vectors.py); layers a file leaves out are zero.
    """
    suffix = path.suffix.lower()
    try:
        if suffix == ".gguf":
            import gguf

            reader = gguf.GGUFReader(str(path))
            rows = {int(t.name.split(".")[1]) + 1: torch.tensor(np.array(t.data), dtype=torch.float32).reshape(-1)
                    for t in reader.tensors if t.name.startswith("direction.")}
            if not rows:
                raise DemoError(f"{path.name} has no direction.* tensors; is it a llama.cpp control vector?")
            hidden = next(iter(rows.values())).numel()
            out = torch.zeros(n_layers, hidden)
            for layer, v in rows.items():
                if not 0 <= layer < n_layers or v.numel() != hidden:
                    raise DemoError(f"{path.name}: direction.{layer - 1} does not fit a model with {n_layers} layers")
                out[layer] = v
            return out
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            tensors = load_file(str(path))
            if not tensors:
                raise DemoError(f"{path.name} holds no tensors")
            t = next(iter(tensors.values()))
        elif suffix == ".pt":
            t = torch.load(path, map_location="cpu", weights_only=True)
        else:
            raise DemoError(f"{path.name}: upload a .safetensors, .pt or .gguf control vector")
    except DemoError:
        raise
    except Exception as e:  # a corrupt or foreign file: one line, not a traceback
        raise DemoError(f"cannot read {path.name}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    if not isinstance(t, torch.Tensor) or t.dim() not in (1, 2):
        raise DemoError(f"{path.name}: expected a [hidden] or [n_layers, hidden] tensor")
    return t.detach().float()
