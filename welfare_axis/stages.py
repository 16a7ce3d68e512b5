"""Cached, resumable pipeline stages.

A stage writes into `<run>/<name>/` and, when it finishes, a `stage.json` marker holding
its key (a hash of its config and of the keys of the stages it depends on), wall time and
summary. Re-running skips a stage whose marker has the same key; an interrupted stage has
no marker and runs again in its folder (stages that can resume, like training, pick up
their own checkpoints); `force` clears and redoes a stage (and so every stage after it
whose key depends on it).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tqdm.auto import tqdm

from envs.artifacts import atomic_write_json, provenance

MARKER = "stage.json"


def stage_key(config: dict, dep_keys: list[str]) -> str:
    blob = json.dumps({"config": config, "deps": dep_keys}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class StageRecord:
    name: str
    key: str
    skipped: bool
    wall_time: float
    summary: dict = field(default_factory=dict)


class StageRunner:
    """Runs named stages in order under one run folder, with one progress bar for the whole run."""

    def __init__(self, run_dir: Path, estimates: dict[str, float], force: set[str] | None = None, progress: bool = True):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.force = set(force or ())
        self.keys: dict[str, str] = {}
        self.records: dict[str, StageRecord] = {}
        self.estimates = estimates
        self._bar = tqdm(
            total=round(sum(estimates.values())),
            unit="s",
            desc="reproduce",
            disable=not progress,
            bar_format="{desc}: {percentage:3.0f}%|{bar}| est. {n_fmt}/{total_fmt}s of work [{elapsed}<{remaining}]{postfix}",
            position=0,
        )

    def stage_dir(self, name: str) -> Path:
        return self.run_dir / name

    def run(self, name: str, config: dict, fn: Callable[[Path], dict | None], deps: tuple[str, ...] = ()) -> StageRecord:
        missing = [d for d in deps if d not in self.keys]
        if missing:
            raise RuntimeError(f"stage {name} depends on {missing}, which have not run")
        key = stage_key(config, [self.keys[d] for d in deps])
        self.keys[name] = key
        folder = self.stage_dir(name)
        marker = folder / MARKER
        upstream_redone = any(not self.records[d].skipped for d in deps)
        if marker.exists():
            done = json.loads(marker.read_text())
            if done.get("key") == key and name not in self.force and not upstream_redone:
                rec = StageRecord(name, key, True, done.get("wall_time", 0.0), done.get("summary", {}))
                self.records[name] = rec
                self._advance(name, skipped=True)
                return rec
        if folder.exists() and (marker.exists() or name in self.force):
            shutil.rmtree(folder)  # a finished stage with another key, or forced: start clean
        folder.mkdir(parents=True, exist_ok=True)
        self._bar.set_postfix_str(f"stage {name}")
        t0 = time.time()
        summary = fn(folder) or {}
        wall = time.time() - t0
        atomic_write_json(
            marker,
            {"name": name, "key": key, "deps": list(deps), "wall_time": wall, "summary": summary, **provenance(config=config)},
        )
        rec = StageRecord(name, key, False, wall, summary)
        self.records[name] = rec
        self._advance(name, skipped=False)
        return rec

    def _advance(self, name: str, skipped: bool) -> None:
        self._bar.update(round(self.estimates.get(name, 0)))
        self._bar.set_postfix_str(f"{name} {'cached' if skipped else 'done'}")

    def close(self) -> None:
        self._bar.close()
