"""Gating: does the gradient flow through MLP units whose gate was closed? (hypothesis H2)

A gated MLP (Llama: down(act(gate(x)) * up(x))) has intermediate units j with input weights
(row j of gate_proj and up_proj) and output weights (column j of down_proj). At token t the
unit is *closed* when its gate pre-activation z_tj < 0. The gradient of a weight is a sum over
tokens of rank-one terms, so we split it by token and unit:

    mass_tj = (|dL/dz_tj| + |dL/du_tj|) * ||x_t||   (input weights: gate and up rows)
            + |a_tj| * ||dL/dy_t||                  (output weights: the down column)

(x: the MLP input, u: the up projection, a = act(z) * u: the down projection's input, y: the
MLP output), each term the Frobenius norm of that token's rank-one contribution. This is
additive over tokens, so the mass of closed (t, j) pairs and of all pairs are well defined;
the squared norm of the summed gradient is not (cross terms between tokens). With ReLU a
closed unit passes no gradient at all, so its mass is exactly 0; SiLU passes a little below
0, which the slope-weighted baseline accounts for: closed pairs' share of |act'(z)|.

Statistics per layer, accumulated over every backward pass while a `GateRecorder` is active
(streamed: only [n_layers] sums are kept): closed share of mass vs of units (`gating_ratio`,
1 = no preference, 0 = closed units get nothing) and vs of slope (`slope_ratio`).
"""

from __future__ import annotations

import numpy as np
import torch

from training.structure import decoder_layers, decoder_of, gated_mlp

SUMS = ("units", "units_closed", "slope", "slope_closed", "mass_in", "mass_in_closed", "mass_out", "mass_out_closed")


def mlp_parts(model) -> list:
    """The gated MLP of each decoder block (`training.structure.gated_mlp`), or [] when the family's MLPs are
    not gated (GPT-2, GPT-NeoX, OPT, Falcon, Phi-3's fused gate): then nothing is recorded and H2 is not measured."""
    parts = [gated_mlp(block) for block in decoder_layers(model)]
    return [] if any(p is None for p in parts) else parts


def activation_derivative(act_fn, z: torch.Tensor) -> torch.Tensor:
    """act'(z) elementwise, signed (by autograd, so any activation works), same shape as z."""
    with torch.enable_grad():
        zz = z.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(act_fn(zz).sum(), zz)
    return g


def input_mass(dz: torch.Tensor, du: torch.Tensor, x_norm: torch.Tensor) -> torch.Tensor:
    """[..., I] input-weight mass of each (token, unit): (|dz| + |du|) * ||x_t||; x_norm is [...]."""
    return (dz.abs() + du.abs()) * x_norm.unsqueeze(-1)


def output_mass(a: torch.Tensor, dy_norm: torch.Tensor) -> torch.Tensor:
    """[..., I] output-weight mass of each (token, unit): |a_tj| * ||dL/dy_t||; dy_norm is [...]."""
    return a.abs() * dy_norm.unsqueeze(-1)


def gate_shares(sums: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Shares of the closed (token, unit) pairs from the recorder's sums (each [n_layers], or scalars).

    unit_share: closed pairs / all pairs; slope_share: closed |act'(z)| / all; mass_share:
    closed mass (input + output weights) / all mass, and the same for input and output weights
    alone; gating_ratio = mass_share / unit_share; slope_ratio = mass_share / slope_share.
    """
    s = {k: np.asarray(v, dtype=float) for k, v in sums.items()}
    with np.errstate(divide="ignore", invalid="ignore"):
        out = {
            "unit_share": s["units_closed"] / s["units"],
            "slope_share": s["slope_closed"] / s["slope"],
            "mass_share": (s["mass_in_closed"] + s["mass_out_closed"]) / (s["mass_in"] + s["mass_out"]),
            "mass_share_in": s["mass_in_closed"] / s["mass_in"],
            "mass_share_out": s["mass_out_closed"] / s["mass_out"],
        }
        out["gating_ratio"] = out["mass_share"] / out["unit_share"]
        out["slope_ratio"] = out["mass_share"] / out["slope_share"]
    return out


class GateRecorder:
    """Context manager: while active, every forward-with-grad + backward adds to per-layer sums.

    Padding positions are left out (the decoder's attention_mask is read by a pre-hook). Only
    what one forward's hooks need until its backward is held ([B, T] norms and [B, T, I] masks).
    """

    def __init__(self, model):
        self.model = model
        self.mlps = mlp_parts(model)
        self.sums = {k: np.zeros(len(self.mlps)) for k in SUMS}
        self._valid: torch.Tensor | None = None
        self._handles: list = []

    def shares(self) -> dict[str, np.ndarray]:
        return gate_shares(self.sums)

    def __enter__(self) -> "GateRecorder":
        def read_mask(_module, args, kwargs):
            m = kwargs.get("attention_mask")
            self._valid = m.bool() if isinstance(m, torch.Tensor) and m.dim() == 2 else None

        self._handles.append(decoder_of(self.model).register_forward_pre_hook(read_mask, with_kwargs=True))
        for layer, mlp in enumerate(self.mlps):
            self._handles.append(mlp.register_forward_hook(self._mlp_hook(layer, mlp)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _add(self, layer: int, key: str, value: torch.Tensor) -> None:
        self.sums[key][layer] += float(value.detach().double().sum())

    def _mlp_hook(self, layer: int, mlp):
        def hook(_module, args, output):
            if not output.requires_grad:
                return
            x = args[0]
            # The gate and up projections are recomputed from the MLP input (cheap next to the
            # backward); the one hook on the MLP output then gives every gradient needed.
            valid = self._valid if self._valid is not None and self._valid.shape == x.shape[:-1] else torch.ones(x.shape[:-1], dtype=torch.bool, device=x.device)
            v = valid.unsqueeze(-1)
            with torch.no_grad():
                z = mlp.gate_proj(x)
                u = mlp.up_proj(x)
                act = mlp.act_fn(z)
                d_act = activation_derivative(mlp.act_fn, z)
                closed = (z < 0) & v
                x_norm = x.detach().float().norm(dim=-1)
                slope = d_act.abs()
            self._add(layer, "units", v.expand_as(z))
            self._add(layer, "units_closed", closed)
            self._add(layer, "slope", slope * v)
            self._add(layer, "slope_closed", slope * closed)
            del z, slope  # only what the backward needs stays alive until then

            def on_grad(dy):
                # dL/dz and dL/du in closed form from dL/dy: dL/da = dy @ W_down (a = act(z) * u),
                # dz = dL/da * u * act'(z), du = dL/da * act(z).
                with torch.no_grad():
                    da = dy @ mlp.down_proj.weight
                    m_in = input_mass(da * u * d_act, da * act, x_norm) * v
                    m_out = output_mass(act * u, dy.float().norm(dim=-1)) * v
                self._add(layer, "mass_in", m_in)
                self._add(layer, "mass_in_closed", m_in * closed)
                self._add(layer, "mass_out", m_out)
                self._add(layer, "mass_out_closed", m_out * closed)

            output.register_hook(on_grad)

        return hook
