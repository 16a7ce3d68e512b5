"""The default vectors shipped with the package, and the one command that regenerates them.

`welfare-axis demo --ship-from RUN_DIR` copies a reproduce run's trained v_* (extract_trained)
and naive u_* (extract_naive), all layers, as float16 (about 100 KB each), with their meta.json,
the run's layer choice (analyze/layer_choice.json), the best steering layer of claim 5
(steer_naive/sentiment_claim.json) and a compact summary of its sentiment eval, plus
provenance.json (preset, seed, package version, source run, the command). float16 keeps the
package small; the demo casts back to float32, and every direction is unit-normalised before
use, so the rounding (relative 1e-3) does not matter.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from envs import TILE_KINDS
from probes.layers import LAYER_CONVENTION
from probes.vectors import ConceptVectors
from welfare_axis import __version__

SHIPPED_DIR = Path(__file__).resolve().parent.parent / "data" / "default_vectors"
SHIP_COMMAND = "welfare-axis demo --ship-from {run}"


@dataclass
class VectorSource:
    """Everything the demo steers with: trained v_*, naive u_*, layers and where they came from."""

    vectors: ConceptVectors
    control: ConceptVectors | None
    layer_choice: dict[str, int]  # per-concept tracking layers l*_k (may be empty)
    best_layer: int | None  # claim 5's best steering layer, when known
    provenance: dict
    evals: dict | None = None  # compact sentiment-eval summary of the run, when present
    unit_ratio: float = 0.1  # alpha 1 adds this fraction of the mean residual norm (claim 5's unit)


def _json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def _as_float32(cv: ConceptVectors) -> ConceptVectors:
    return ConceptVectors({k: v.float() for k, v in cv.vectors.items()}, meta=cv.meta)


def _compact_evals(summary: dict | None) -> dict | None:
    """Slope, CI and mean sentiment by alpha per vector (the full summary holds per-prompt data)."""
    if not summary or "vectors" not in summary:
        return None
    keep = ("slope", "ci_lo", "ci_hi", "mean_by_alpha")
    return {"metric": summary.get("metric"), "vectors": {k: {f: v[f] for f in keep if f in v} for k, v in summary["vectors"].items()}}


def source_from_run(run: str | os.PathLike) -> VectorSource:
    """A reproduce run's vectors, controls, layer choice, best steering layer and evals."""
    run = Path(run)
    if not (run / "extract_trained" / "vectors.safetensors").exists():
        raise FileNotFoundError(f"{run} is not a reproduce run (no extract_trained/vectors.safetensors)")
    control = run / "extract_naive"
    choice = _json(run / "analyze" / "layer_choice.json") or {}
    claim = _json(run / "steer_naive" / "sentiment_claim.json") or {}
    cfg = _json(run / "run_config.json") or {}
    return VectorSource(
        vectors=ConceptVectors.load(run / "extract_trained"),
        control=ConceptVectors.load(control) if (control / "vectors.safetensors").exists() else None,
        layer_choice={k: int(v) for k, v in choice.items() if k in TILE_KINDS},
        best_layer=claim.get("layer"),
        provenance={"source_run": str(run), "preset": cfg.get("preset"),
                    "seed": cfg.get("seed"), "package_version": cfg.get("package_version"), "created": cfg.get("created")},
        evals=_compact_evals(_json(run / "steer_naive" / "sentiment_summary.json")),
        unit_ratio=float(claim.get("unit_ratio", 0.1)),
    )


def source_from_dirs(vectors: str | os.PathLike, control: str | os.PathLike | None = None,
                     analysis: str | os.PathLike | None = None) -> VectorSource:
    """A user's own vectors (and controls); layers from an analysis folder's layer_choice.json if given."""
    choice = (_json(Path(analysis) / "layer_choice.json") or {}) if analysis else {}
    return VectorSource(
        vectors=ConceptVectors.load(vectors),
        control=ConceptVectors.load(control) if control else None,
        layer_choice={k: int(v) for k, v in choice.items() if k in TILE_KINDS},
        best_layer=None,
        provenance={"vectors": str(vectors), "control": None if control is None else str(control)},
    )


def load_shipped(directory: str | os.PathLike = SHIPPED_DIR) -> VectorSource:
    """The shipped default vectors (float16 on disk, float32 here)."""
    d = Path(directory)
    if not (d / "trained" / "vectors.safetensors").exists():
        raise FileNotFoundError(f"no shipped vectors in {d}; regenerate them with: {SHIP_COMMAND.format(run='runs/reproduce')}")
    prov = _json(d / "provenance.json") or {}
    return VectorSource(
        vectors=_as_float32(ConceptVectors.load(d / "trained")),
        control=_as_float32(ConceptVectors.load(d / "naive")) if (d / "naive" / "vectors.safetensors").exists() else None,
        layer_choice={k: int(v) for k, v in (_json(d / "layer_choice.json") or {}).items() if k in TILE_KINDS},
        best_layer=prov.get("best_steering_layer"),
        provenance=prov,
        evals=_json(d / "evals.json"),
        unit_ratio=float(prov.get("unit_ratio", 0.1)),
    )


def _write_half(cv: ConceptVectors, out: Path, role: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to(torch.float16).contiguous() for k, v in cv.vectors.items()}
    save_file(tensors, str(out / "vectors.safetensors"), metadata={"layer_convention": LAYER_CONVENTION, "dtype": "float16"})
    meta = {**cv.meta, "shipped_dtype": "float16", "role": role}
    (out / "meta.json").write_text(json.dumps(meta, indent=2))


def ship_from_run(run: str | os.PathLike, out: str | os.PathLike = SHIPPED_DIR) -> Path:
    """Replace the shipped vectors in `out` with those of reproduce run `run`."""
    src = source_from_run(run)
    if src.control is None:
        raise FileNotFoundError(f"{run} has no extract_naive/vectors.safetensors (the u_* controls)")
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    _write_half(src.vectors, tmp / "trained", "trained v_* (the maze-trained model's concept vectors)")
    _write_half(src.control, tmp / "naive", "naive u_* (the maze-naive model's concept vectors, the controls)")
    raw_choice = _json(Path(run) / "analyze" / "layer_choice.json") or {}
    (tmp / "layer_choice.json").write_text(json.dumps(raw_choice, indent=2))
    if src.evals:
        (tmp / "evals.json").write_text(json.dumps(src.evals, indent=1))
    prov = {
        **src.provenance,
        "source_run": Path(run).name,  # a machine-local path would mean nothing elsewhere
        "shipped_by_package_version": __version__,
        "shipped": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": SHIP_COMMAND.format(run=run),
        "model": (src.control.meta.get("model") or {}).get("model_id"),
        "trained_model": src.vectors.meta.get("model"),
        "layer_convention": src.vectors.meta.get("layer_convention", LAYER_CONVENTION),
        "n_layers": src.vectors.n_layers,
        "hidden_size": src.vectors.hidden_size,
        "best_steering_layer": src.best_layer,
        "unit_ratio": src.unit_ratio,
        "alpha_unit": "alpha 1 adds unit_ratio x the mean residual norm at the layer along the unit direction",
    }
    (tmp / "provenance.json").write_text(json.dumps(prov, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out
