"""Cached, resumable pipeline stages.

A stage writes into `<run>/<name>/` and, when it finishes, a `stage.json` marker holding
its key (a hash of its config and of the keys of the stages it depends on), wall time and
summary. Re-running skips a stage whose marker has the same key and was made from the
finished stages it depends on as they are now; `force` clears and redoes a stage (and so
every stage after it whose key depends on it).

A stage that starts writes `stage.started.json` (its key and the runs of its dependencies)
first. An interrupted stage (no marker) continues in its folder only when that record matches
(stages that can resume, like training, pick up their own checkpoints); otherwise its folder is
cleared and it starts again, so a run never mixes outputs made from two configs.

Keys are on content, not on how the run folder is spelled: a config's paths inside the run are
replaced by run-relative ones (`run_relative`) before keying and storing. A marker of another
`KEY_VERSION` is not trusted: its stage runs again.

One process at a time works in a run folder (`lock_run`, a file lock on `<run>/.lock`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from tqdm.auto import tqdm

from core.artifacts import atomic_write_json, provenance, remove_orphaned_folders

# Stage names, in order; each writes into <run>/<name>/. They live here, in the module that imports
# nothing else from welfare_axis at load time, so the pipeline, the report and the CLI share them
# without importing one another.
STAGES = (
    "naive_eval", "train_sft", "train_rl", "trained_eval", "extract_naive", "plant", "extract_trained",
    "analyze", "steer_naive", "steer_behaviours", "steer_trained", "mechanics", "report",
)

MARKER = "stage.json"
STARTED = "stage.started.json"
LOCK = ".lock"
KEY_VERSION = 2  # 2: paths inside the run are keyed run-relative


def stage_key(config: dict, dep_keys: list[str]) -> str:
    blob = json.dumps({"config": config, "deps": dep_keys}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_relative(obj, run_dir: Path):
    """`obj` (a config or summary) with every string naming an existing path inside `run_dir` made relative to it.

    Relative strings are read from the current directory, as the command that wrote them did."""
    root = Path(run_dir).resolve()

    def walk(x):
        if isinstance(x, dict):
            return {k: walk(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [walk(v) for v in x]
        if isinstance(x, str) and x and "\n" not in x:
            try:
                p = Path(x).resolve()
                if p != root and p.is_relative_to(root) and p.exists():
                    return p.relative_to(root).as_posix()
            except (OSError, ValueError):
                pass
        return x

    return json.loads(json.dumps(walk(obj), default=str))  # tuples as lists, as a marker reads back


@contextmanager
def lock_run(run_dir: str | os.PathLike) -> Iterator[None]:
    """Hold `<run>/.lock` while a process works in the run folder; a second process is refused at once."""
    from filelock import FileLock, Timeout

    from welfare_axis.options import UserError

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(run_dir / LOCK)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise UserError(f"another process is already running in {run_dir} (it holds {run_dir / LOCK}); "
                        "wait for it to finish or use another --out") from None
    try:
        yield
    finally:
        lock.release()


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another filesystem, or links not allowed
        shutil.copy2(src, dst)


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@dataclass
class StageRecord:
    name: str
    key: str
    skipped: bool
    wall_time: float
    summary: dict = field(default_factory=dict)
    run_id: str | None = None  # this stage's finished run (None: a marker older than run ids)
    created: str = ""


class StoppedAfter(Exception):
    """Raised by `StageRunner.run` once the stage named by `stop_after` is finished (run or cached)."""

    def __init__(self, stage: str):
        super().__init__(stage)
        self.stage = stage


class StageRunner:
    """Runs named stages in order under one run folder, with one progress bar for the whole run.

    `stop_after`: a stage name; the run stops (StoppedAfter) once that stage is finished, so the
    expensive stages of several seeds can be prepared before the read-outs are run on them."""

    def __init__(self, run_dir: Path, estimates: dict[str, float], force: set[str] | None = None, progress: bool = True,
                 stop_after: str | None = None, reuse_from: list[Path] | None = None):
        self.stop_after = stop_after
        self.reuse_from = [Path(r) for r in reuse_from or () if Path(r).resolve() != Path(run_dir).resolve()]
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
        config = run_relative(config, self.run_dir)
        key = stage_key(config, [self.keys[d] for d in deps])
        self.keys[name] = key
        after = {d: self.records[d].run_id for d in deps}  # the dependencies' finished runs this stage is made from
        folder = self.stage_dir(name)
        marker = folder / MARKER
        fresh = name not in self.force and not any(not self.records[d].skipped for d in deps)
        done = _read(marker) if marker.exists() else None
        cached = done if done is not None and self._still_valid(done, key, config, deps, after) else None
        if fresh and cached is None:
            cached = self._reuse(name, key, config, deps, after)  # a sibling run's finished stage, linked in
        if fresh and cached is not None:
            rec = StageRecord(name, key, True, cached.get("wall_time", 0.0), cached.get("summary", {}), cached.get("run_id"),
                              cached.get("created", ""))
            self.records[name] = rec
            self._advance(name, skipped=True)
            self._maybe_stop(name)
            return rec
        started = _read(folder / STARTED) if done is None else None
        resume = fresh and started is not None and started.get("key") == key and started.get("after") == after
        if folder.exists() and not resume:
            if done is None and any(p.name != STARTED for p in folder.iterdir()):
                self._log(f"stage {name}: its unfinished output in {folder} was started with another config or from other "
                          "inputs (or cannot tell); starting it again")
            shutil.rmtree(folder)  # a finished stage with another key, forced, or unfinished output of another config
        folder.mkdir(parents=True, exist_ok=True)
        if resume:
            remove_orphaned_folders(folder)  # output sets a kill interrupted mid-write
        else:
            atomic_write_json(folder / STARTED, {"name": name, "key": key, "after": after, "config": config,
                                                  "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        self._bar.set_postfix_str(f"stage {name}")
        t0 = time.time()
        summary = run_relative(fn(folder) or {}, self.run_dir)
        wall = time.time() - t0
        run_id = uuid.uuid4().hex
        record = {"name": name, "key": key, "key_version": KEY_VERSION, "run_id": run_id, "deps": list(deps), "after": after,
                  "wall_time": wall, "summary": summary, **provenance(config=config)}
        atomic_write_json(marker, record)
        (folder / STARTED).unlink(missing_ok=True)
        rec = StageRecord(name, key, False, wall, summary, run_id, record["created"])
        self.records[name] = rec
        self._advance(name, skipped=False)
        self._maybe_stop(name)
        return rec

    def _maybe_stop(self, name: str) -> None:
        if name == self.stop_after:
            raise StoppedAfter(name)

    def _still_valid(self, done: dict, key: str, config: dict, deps: tuple[str, ...], after: dict) -> bool:
        """A finished stage is kept when made with this key (and key version) from its dependencies' current runs."""
        return done.get("key_version") == KEY_VERSION and done.get("key") == key and done.get("after") == after

    def _reuse(self, name: str, key: str, config: dict, deps: tuple[str, ...], after: dict) -> dict | None:
        """The marker of the same stage finished with this key from the same dependency runs in a sibling run
        (`reuse_from`), its folder linked into this run; None if no sibling has it."""
        for other in self.reuse_from:
            src = other / name
            done = _read(src / MARKER) if (src / MARKER).exists() else None
            if done is None or not self._still_valid(done, key, config, deps, after):
                continue
            folder = self.stage_dir(name)
            if folder.exists():
                shutil.rmtree(folder)
            tmp = folder.with_name(f".{name}.{uuid.uuid4().hex[:8]}")
            shutil.copytree(src, tmp, copy_function=_link_or_copy)  # hard links: no second copy of activations or weights
            os.replace(tmp, folder)
            self._log(f"stage {name}: reused from {other}")
            return done
        return None

    def _log(self, message: str) -> None:
        tqdm.write(message, file=sys.stderr)

    def _advance(self, name: str, skipped: bool) -> None:
        self._bar.update(round(self.estimates.get(name, 0)))
        self._bar.set_postfix_str(f"{name} {'cached' if skipped else 'done'}")

    def close(self) -> None:
        self._bar.close()
