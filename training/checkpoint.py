"""Run folders and atomic checkpoints with resume state.

Run folder layout:
    config.json                      {"config": TrainConfig, "provenance": ...}
    metrics.parquet                  one row per step
    checkpoints/step_000010/model/   LoRA adapter (adapter_config.json) or full weights (config.json)
    checkpoints/step_000010/state.pt optimizer, scheduler, step, RNG states, metric rows so far
A checkpoint folder is written under a temporary name and renamed into place, so a
folder named step_* is always complete. Only the latest checkpoint keeps its state.pt (resume
continues from the latest; a full fine-tune's optimizer state is ~1.1 GB on the default model);
every checkpoint keeps its model.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from core.artifacts import atomic_write_json, ordinary_permissions, provenance
from training.config import TrainConfig
from training.models import model_info

CHECKPOINTS = "checkpoints"


class TrainingDiverged(RuntimeError):
    """A non-finite loss or gradient; the message names the last good checkpoint."""


def checkpoint_dirs(run_dir: str | os.PathLike) -> list[Path]:
    root = Path(run_dir) / CHECKPOINTS
    return sorted(p for p in root.glob("step_*") if p.is_dir()) if root.exists() else []


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    dirs = checkpoint_dirs(run_dir)
    return dirs[-1] if dirs else None


def final_checkpoint(run_dir: str | os.PathLike) -> Path:
    """The model folder of a run's last checkpoint, usable as `load_model(name, checkpoint=path)`."""
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        raise FileNotFoundError(f"{run_dir} has no checkpoints; train first (welfare-axis train rl --out {run_dir})")
    return ckpt / "model"


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def save_checkpoint(run_dir, step: int, model, tokenizer, optimizer, scheduler, rows: list[dict], extra: dict | None = None) -> Path:
    """Atomically write checkpoints/step_{step:06d} (step = number of finished steps)."""
    root = Path(run_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    target = root / f"step_{step:06d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".step_{step:06d}-", dir=root))
    try:
        model.save_pretrained(tmp / "model", safe_serialization=True)
        if not (tmp / "model" / "adapter_config.json").exists():
            tokenizer.save_pretrained(tmp / "model")  # a full checkpoint loads like any model folder
        (tmp / "model" / "welfare_axis_checkpoint.json").write_text(
            json.dumps({"base_model": model_info(model).model_id, "step": step}) + "\n"
        )
        torch.save(
            {
                "step": step,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": rng_state(),
                "rows": rows,
                **(extra or {}),
            },
            tmp / "state.pt",
        )
        ordinary_permissions(tmp)  # mkdtemp makes 0700 and safetensors 0600; a checkpoint is an ordinary folder
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for older in checkpoint_dirs(run_dir):
        if older != target:
            (older / "state.pt").unlink(missing_ok=True)
    return target


def load_checkpoint(ckpt: Path, model, optimizer, scheduler) -> dict:
    """Restore weights, optimizer, scheduler and RNG state in place; returns the state dict."""
    from safetensors.torch import load_file

    mdir = ckpt / "model"
    if (mdir / "adapter_config.json").exists():
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, load_file(mdir / "adapter_model.safetensors"))
    else:
        from transformers import AutoModelForCausalLM

        loaded = AutoModelForCausalLM.from_pretrained(mdir, dtype=next(model.parameters()).dtype)
        model.load_state_dict(loaded.state_dict())
    state = torch.load(ckpt / "state.pt", weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    return state


def resume_from_latest(run_dir, model, optimizer, scheduler) -> tuple[Path | None, int, list[dict], float]:
    """(checkpoint, finished steps, metric rows, wall time so far) with the latest checkpoint restored; a fresh start without one."""
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        return None, 0, [], 0.0
    state = load_checkpoint(ckpt, model, optimizer, scheduler)
    rows = list(state["rows"])
    return ckpt, state["step"], rows, rows[-1]["wall_time"] if rows else 0.0


def last_good_note(ckpt: Path | None) -> str:
    """Where a diverged run can resume from, for its error message."""
    return f"the last good checkpoint is {ckpt}" if ckpt else "no checkpoint was written yet"


def saved_run_config(run_dir, kind: str) -> TrainConfig:
    """The config saved in an existing `kind` ("rl" or "sft") run folder; refuses a missing run or one of the other kind."""
    cfg_path = Path(run_dir) / "config.json"
    if not cfg_path.exists():
        raise FileNotFoundError(f"cannot resume: {cfg_path} does not exist (no run in {run_dir})")
    saved = json.loads(cfg_path.read_text())
    if saved.get("kind", kind) != kind:
        raise ValueError(f"{run_dir} is a {saved['kind'].upper()} run, not {kind.upper()}: resume it with "
                         f"'welfare-axis train {saved['kind']} --resume --out {run_dir}', or start the {kind.upper()} run in another --out")
    return TrainConfig.from_dict(saved["config"])


def remove_orphaned_checkpoints(run_dir) -> None:
    """Temporary checkpoint folders (`checkpoints/.step_*`) left by a kill during a write: incomplete by construction."""
    root = Path(run_dir) / CHECKPOINTS
    for tmp in root.glob(".step_*") if root.exists() else ():
        shutil.rmtree(tmp, ignore_errors=True)


def check_new_run_dir(run_dir) -> None:
    """Refuse a folder that already holds a run (before any slow work)."""
    run_dir = Path(run_dir)
    if checkpoint_dirs(run_dir) or (run_dir / "metrics.parquet").exists():
        raise ValueError(f"{run_dir} already holds a run; pass --resume to continue it or choose a new --out folder")


def write_run_config(run_dir, config: TrainConfig, kind: str, model_info: dict | None = None) -> None:
    """Create the run folder and its config.json: once everything that could fail cheaply (model, optimizer) has not."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / "config.json", {"kind": kind, "config": config.to_dict(),
                                                "provenance": provenance(config=config.to_dict(), seed=config.seed, model=model_info)})


def open_run_dir(run_dir, config: TrainConfig, resume: bool, kind: str) -> TrainConfig:
    """The config to train with. On resume: the saved one (orphaned temporary checkpoints removed). Else `config`, once
    `run_dir` is known to hold no run; the trainers write its config.json only after their cheap setup has worked."""
    if resume:
        config = saved_run_config(run_dir, kind)
        remove_orphaned_checkpoints(run_dir)
        return config
    check_new_run_dir(run_dir)
    return config


def prepare_run_dir(run_dir, config: TrainConfig, resume: bool, kind: str, model_info: dict | None = None) -> TrainConfig:
    """On resume: the saved config (orphaned temporary checkpoints removed). Else: a new run folder and config.json."""
    config = open_run_dir(run_dir, config, resume, kind)
    if not resume:
        write_run_config(run_dir, config, kind, model_info)
    return config
