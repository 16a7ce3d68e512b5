"""A run is what its files say: stale resumes, path-spelled keys, two processes, orphaned
temporary checkpoints, all-or-nothing outputs and --resume's flags."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import training.rl as rl
from core.artifacts import atomic_folder
from training.checkpoint import checkpoint_dirs, prepare_run_dir
from training.config import config_from_preset
from welfare_axis.cli import main
from welfare_axis.pipeline import reproduce
from welfare_axis.stages import MARKER, StageRunner, run_relative


class _Stop(Exception):
    pass


def _stop_at(monkeypatch, stage: str) -> None:
    """Make a reproduce run end (with _Stop) when it reaches `stage`, so a test runs only the stages before it."""
    real = StageRunner.run

    def run(self, name, *args, **kw):
        if name == stage:
            raise _Stop
        return real(self, name, *args, **kw)

    monkeypatch.setattr(StageRunner, "run", run)


def _mtimes(run: Path) -> dict[str, int]:
    return {p.parent.name: p.stat().st_mtime_ns for p in run.glob(f"*/{MARKER}")}


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


# -- reproduce: stale resume, path spelling, lock (smoke preset) -----------------------------------------------


def test_smoke_rl_interrupted_then_rerun_with_another_seed_restarts_rl_from_the_new_sft(tmp_path, monkeypatch, capsys):
    run = tmp_path / "smoke"
    real_save = rl.save_checkpoint

    def save_then_die(run_dir, step, *args, **kw):
        real_save(run_dir, step, *args, **kw)
        raise KeyboardInterrupt  # killed during RL, right after its first checkpoint

    monkeypatch.setattr(rl, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        reproduce(preset="smoke", out=run, seed=0, progress=False)
    assert json.loads((run / "train_rl" / "config.json").read_text())["config"]["seed"] == 0
    assert not (run / "train_rl" / MARKER).exists()

    monkeypatch.setattr(rl, "save_checkpoint", real_save)
    _stop_at(monkeypatch, "trained_eval")
    with pytest.raises(_Stop):
        reproduce(preset="smoke", out=run, seed=1, progress=False)
    saved = json.loads((run / "train_rl" / "config.json").read_text())["config"]
    assert saved["seed"] == 1  # not the seed-0 RL run continued on top of the seed-1 SFT model
    assert Path(saved["model"]).parent.parent.parent == run / "train_sft"
    marker = json.loads((run / "train_rl" / MARKER).read_text())
    assert marker["config"]["train"]["seed"] == 1 and marker["config"]["train"]["model"].startswith("train_sft/checkpoints/")
    metrics = pd.read_parquet(run / "train_rl" / "metrics.parquet")
    assert list(metrics["step"]) == [1, 2, 3, 4]  # one fresh run of 4 steps, not 2 old + 2 new
    assert "starting it again" in capsys.readouterr().err


def test_smoke_stage_keys_do_not_depend_on_how_out_is_spelled(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _stop_at(monkeypatch, "trained_eval")
    with pytest.raises(_Stop):
        reproduce(preset="smoke", out="runs/x", progress=False)
    first = _mtimes(tmp_path / "runs" / "x")
    assert {"naive_eval", "train_sft", "train_rl"} <= set(first)
    for spelling in (str(tmp_path / "runs" / "x"), "./runs/../runs/x/"):
        with pytest.raises(_Stop):
            reproduce(preset="smoke", out=spelling, progress=False)
        assert _mtimes(tmp_path / "runs" / "x") == first, spelling  # nothing redone
    marker = json.loads((tmp_path / "runs" / "x" / "train_rl" / MARKER).read_text())
    assert marker["config"]["train"]["model"].startswith("train_sft/checkpoints/step_")
    assert json.loads((tmp_path / "runs" / "x" / "train_sft" / MARKER).read_text())["summary"]["checkpoint"].startswith("train_sft/")


def test_smoke_second_reproduce_on_one_out_is_refused_with_one_line(tmp_path, capsys):
    run = tmp_path / "smoke"
    proc = subprocess.Popen(
        [sys.executable, "-m", "welfare_axis.cli", "reproduce", "--preset", "smoke", "--out", str(run), "--no-progress"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        deadline = time.time() + 120
        while not (run / "run_config.json").exists():
            assert proc.poll() is None, "the first reproduce exited early"
            assert time.time() < deadline
            time.sleep(0.1)
        written = (run / "run_config.json").stat().st_mtime_ns
        assert main(["reproduce", "--preset", "smoke", "--out", str(run), "--no-progress"]) == 2
        err = _one_line_error(capsys)
        assert "another process is already running in" in err
        assert (run / "run_config.json").stat().st_mtime_ns == written  # the second one wrote nothing
        assert proc.poll() is None  # and the first one goes on
    finally:
        proc.kill()
        proc.wait()


# -- the stage runner --------------------------------------------------------------------------------------------


def _write(name):
    def fn(folder):
        (folder / "out.txt").write_text(name)
        return {"file": str(folder / "out.txt")}

    return fn


def test_unfinished_stage_resumes_only_from_output_of_the_same_key_and_inputs(tmp_path, capsys):
    def runner():
        return StageRunner(tmp_path, {}, progress=False)

    r = runner()
    r.run("a", {"x": 1}, _write("a"))

    def die(folder):
        (folder / "partial").write_text("seed 0")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        r.run("b", {"seed": 0}, die, deps=("a",))
    # same key, same inputs: the stage continues in its folder, less an output set a kill left half-written
    (tmp_path / "b" / ".out.x1y2.tmp").mkdir()
    seen = []
    r = runner()
    r.run("a", {"x": 1}, _write("a"))
    with pytest.raises(KeyboardInterrupt):
        r.run("b", {"seed": 0}, lambda d: seen.append((d / "partial").exists() and not (d / ".out.x1y2.tmp").exists()) or die(d),
              deps=("a",))
    assert seen == [True]
    # another config: the old partial output is cleared first, with one line saying so
    capsys.readouterr()
    r = runner()
    r.run("a", {"x": 1}, _write("a"))
    r.run("b", {"seed": 1}, lambda d: seen.append((d / "partial").exists()) or {}, deps=("a",))
    assert seen == [True, False] and "stage b" in capsys.readouterr().err
    # an upstream stage redone in another process (its marker changed) makes a finished stage stale
    r = runner()
    r.force = {"a"}
    r.run("a", {"x": 1}, _write("a"))
    r = runner()
    r.run("a", {"x": 1}, _write("a"))
    rec = r.run("b", {"seed": 1}, lambda d: {}, deps=("a",))
    assert not rec.skipped


def test_stage_config_paths_are_run_relative_and_markers_of_another_key_version_rerun(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = Path("runs/r")
    StageRunner(run, {}, progress=False).run("a", {"x": 1}, _write("a"))
    model = run / "a" / "out.txt"
    cfg = {"model": str(model), "n": 2}
    assert run_relative(cfg, run) == {"model": "a/out.txt", "n": 2} == run_relative({**cfg, "model": str(model.resolve())}, run.resolve())
    calls = []
    r = StageRunner(run.resolve(), {}, progress=False)
    r.run("a", {"x": 1}, _write("a"))
    first = r.run("b", {**cfg, "model": str(model.resolve())}, lambda d: calls.append(1) or {}, deps=("a",))
    r = StageRunner(run, {}, progress=False)  # the run spelled another way: the same keys, nothing re-runs
    r.run("a", {"x": 1}, _write("a"))
    assert r.run("b", cfg, lambda d: calls.append(1) or {}, deps=("a",)).key == first.key and calls == [1]
    old = json.loads((run / "b" / MARKER).read_text())
    (run / "b" / MARKER).write_text(json.dumps({**old, "key_version": 1}))  # a marker of an older key version
    r = StageRunner(run, {}, progress=False)
    r.run("a", {"x": 1}, _write("a"))
    assert not r.run("b", cfg, lambda d: calls.append(1) or {}, deps=("a",)).skipped and calls == [1, 1]


# -- training: orphaned temporary checkpoints, config.json only once set up, --resume's flags ---------------------


def test_resume_removes_orphaned_temporary_checkpoint_folders(tmp_path):
    cfg = config_from_preset("tiny")
    prepare_run_dir(tmp_path, cfg, False, "rl")
    real = tmp_path / "checkpoints" / "step_000002"
    real.mkdir(parents=True)
    orphan = tmp_path / "checkpoints" / ".step_000004-abc123"
    (orphan / "model").mkdir(parents=True)
    (orphan / "model" / "model.safetensors").write_bytes(b"x" * 1000)
    prepare_run_dir(tmp_path, cfg, True, "rl")
    assert not orphan.exists() and real.exists()


def test_failed_train_rl_leaves_no_config_json(tmp_path, capsys, monkeypatch):
    out = tmp_path / "rl"
    assert main(["train", "rl", "--preset", "tiny", "--lr", "-1", "--out", str(out), "--no-progress"]) == 2
    _one_line_error(capsys)
    assert not out.exists()

    def broken_optimizer(*args, **kw):
        raise ValueError("optimizer could not be built")

    monkeypatch.setattr(rl.torch.optim, "AdamW", broken_optimizer)  # a failure after the model loaded
    assert main(["train", "rl", "--preset", "tiny", "--out", str(out), "--no-progress"]) == 2
    assert not (out / "config.json").exists()


def test_resume_print_config_prints_the_saved_config_or_refuses(tmp_path, capsys):
    run = tmp_path / "rl"
    prepare_run_dir(run, config_from_preset("tiny", lr=0.0123), False, "rl")
    assert main(["train", "rl", "--out", str(run), "--resume", "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["lr"] == 0.0123 and printed["model"] == "tiny"
    assert main(["train", "rl", "--out", str(tmp_path / "none"), "--resume", "--print-config"]) == 2
    assert "does not exist" in _one_line_error(capsys)


def test_resume_with_preset_is_refused_like_other_changed_flags(tmp_path, capsys):
    run = tmp_path / "rl"
    prepare_run_dir(run, config_from_preset("tiny"), False, "rl")
    assert main(["train", "rl", "--out", str(run), "--resume", "--preset", "tiny", "--no-progress"]) == 2
    assert "--preset would be ignored" in _one_line_error(capsys)


def test_resuming_a_run_of_the_other_kind_is_refused(tmp_path, capsys):
    rl_run, sft_run = tmp_path / "rl", tmp_path / "sft"
    prepare_run_dir(rl_run, config_from_preset("tiny"), False, "rl")
    prepare_run_dir(sft_run, config_from_preset("tiny"), False, "sft")
    assert main(["train", "sft", "--out", str(rl_run), "--resume", "--no-progress"]) == 2
    assert "is a RL run, not SFT" in _one_line_error(capsys)
    assert main(["train", "rl", "--out", str(sft_run), "--resume", "--no-progress"]) == 2
    assert "train sft --resume" in _one_line_error(capsys)
    assert not checkpoint_dirs(rl_run) and not checkpoint_dirs(sft_run)


# -- all-or-nothing output sets -----------------------------------------------------------------------------------


def test_atomic_folder_is_all_or_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_folder(tmp_path / "new") as tmp:
            (tmp / "a").write_text("1")
            raise RuntimeError
    assert list(tmp_path.iterdir()) == []  # not even the folder
    with atomic_folder(tmp_path / "new") as tmp:
        (tmp / "a").write_text("1")
        (tmp / "sub").mkdir()
    assert (tmp_path / "new" / "a").read_text() == "1" and (tmp_path / "new" / "sub").is_dir()
    with pytest.raises(RuntimeError):
        with atomic_folder(tmp_path / "new") as tmp:
            (tmp / "a").write_text("2")
            raise RuntimeError
    assert (tmp_path / "new" / "a").read_text() == "1" and sorted(p.name for p in (tmp_path / "new").iterdir()) == ["a", "sub"]
    with atomic_folder(tmp_path / "new") as tmp:  # an existing folder: entries replaced, others kept
        (tmp / "a").write_text("3")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "f").write_text("x")
    assert (tmp_path / "new" / "a").read_text() == "3" and [p.name for p in (tmp_path / "new" / "sub").iterdir()] == ["f"]


def test_train_eval_writes_episodes_first_moves_and_summary_together_or_not_at_all(tmp_path, capsys, monkeypatch):
    base = tmp_path / "base.parquet"
    assert main(["train", "eval", "--model", "tiny", "--size", "12", "--n-moves", "2", "--n-mazes", "2", "--out", str(base),
                 "--no-progress"]) == 0
    new = tmp_path / "new.parquet"
    # a baseline on other mazes: refused before the eval, nothing written
    assert main(["train", "eval", "--model", "tiny", "--size", "12", "--n-moves", "2", "--n-mazes", "3", "--out", str(new),
                 "--baseline", str(base), "--no-progress"]) == 2
    assert "--n-mazes" in _one_line_error(capsys) and not new.exists()
    # a failure at the very end: none of the three files
    import training.evaluate as ev

    monkeypatch.setattr(ev, "write_summary", lambda *a: (_ for _ in ()).throw(ValueError("disk full")))
    assert main(["train", "eval", "--model", "tiny", "--size", "12", "--n-moves", "2", "--n-mazes", "2", "--out", str(new),
                 "--baseline", str(base), "--no-progress"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base.json", "base.parquet", "base_first_move.parquet"]


def test_failed_extract_writes_none_of_its_files(tmp_path, tiny, monkeypatch):
    from probes import extract
    from probes.extract import extract_vectors

    model, tok = tiny

    def save_then_fail(self, d):
        (Path(d) / "vectors.safetensors").write_bytes(b"")
        raise OSError("disk full")

    monkeypatch.setattr(extract.ConceptVectors, "save", save_then_fail)
    with pytest.raises(OSError):
        extract_vectors(model, tok, 2, max_moves=1, progress=False, out_dir=tmp_path / "v")
    assert list(tmp_path.iterdir()) == []


def test_extract_writes_control_vectors_inside_its_all_or_nothing_folder(tmp_path, monkeypatch):
    from probes.vectors import ConceptVectors

    args = ["extract", "--model", "tiny", "-n", "2", "--max-moves", "1", "--size", "12", "--gguf-layer", "2", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "v")]) == 0
    assert sorted(p.name for p in (tmp_path / "v").glob("*.gguf")) == ["gold_layer2.gguf", "mold_layer2.gguf", "path_layer2.gguf"]

    def fail_on_second(self, name, path, layers=None, **kw):
        if name != self.names[0]:
            raise OSError("disk full")
        Path(path).write_bytes(b"partial")
        return Path(path)

    monkeypatch.setattr(ConceptVectors, "export_gguf", fail_on_second)
    assert main([*args, "--out", str(tmp_path / "w")]) == 1  # an OSError mid-export: internal error, one line
    assert not (tmp_path / "w").exists()  # no vectors without their control vectors, nor half the GGUFs


def test_failed_analyze_leaves_no_folder(tmp_path, capsys, monkeypatch):
    assert main(["extract", "--model", "tiny", "-n", "4", "--max-moves", "1", "--size", "12", "--out", str(tmp_path / "v"),
                 "--no-progress"]) == 0
    out = tmp_path / "a"
    # a bad option: refused before any slow work
    assert main(["analyze", "--vectors", str(tmp_path / "v"), "--out", str(out), "--emotion-layer", "99", "--no-progress"]) == 2
    assert "emotion_layer must be in 0..3" in _one_line_error(capsys)
    assert not out.exists()
    # a failure at the end: no folder either
    import probes.analyze as an

    monkeypatch.setattr(an, "analysis_plots", lambda *a: (_ for _ in ()).throw(ValueError("no display")))
    assert main(["analyze", "--vectors", str(tmp_path / "v"), "--out", str(out), "--no-probe", "--no-progress"]) == 2
    assert not out.exists()


def test_stories_are_keyed_on_content_and_checked_before_any_slow_work(tmp_path):
    from welfare_axis.pipeline import _stories_key

    shipped = Path(__file__).resolve().parents[1] / "probes" / "data" / "emotion_stories.json"
    a, b = tmp_path / "a.json", tmp_path / "sub" / "b.json"
    b.parent.mkdir()
    a.write_bytes(shipped.read_bytes())
    b.write_bytes(shipped.read_bytes())
    assert _stories_key(None) is None
    assert _stories_key(str(a)) == _stories_key(str(b)) is not None  # two paths, one content: one key
    data = json.loads(a.read_text())
    data["emotions"].popitem()
    b.write_text(json.dumps(data))
    assert _stories_key(str(a)) != _stories_key(str(b))
    bad = tmp_path / "bad.json"
    bad.write_text('{"emotions": {}}')
    with pytest.raises(ValueError):
        reproduce(preset="smoke", out=tmp_path / "run", stories=str(bad), progress=False)
    assert not (tmp_path / "run").exists()
