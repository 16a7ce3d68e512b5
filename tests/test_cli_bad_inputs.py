"""Every bad input: one line on stderr, exit 2, before any slow work, and offline by default.

The bad-input cases run `main` in-process with `training.models.load_model` replaced by a function that
fails the test: each must be refused before a model is loaded. The hypothesis test feeds random values
to numeric and path options; there a value that passes validation reaches load_model, which then stops
the command with a user error (exit 2), so no case does slow work."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

import training.models
from probes.vectors import ConceptVectors
from welfare_axis.cli import main
from welfare_axis.options import UserError

L, H, N = 4, 64, 8  # the tiny model: 4 layers x 64


def _vectors_folder(d: Path, model_id: str = "tiny") -> Path:
    g = torch.Generator().manual_seed(0)
    vecs = {k: torch.randn(L, H, generator=g) for k in ("mold", "gold", "path")}
    ConceptVectors(vecs, meta={"model": {"model_id": model_id, "n_layers": L, "hidden_size": H}, "n_layers": L, "hidden_size": H}).save(d)
    pd.DataFrame({"kind": ["mold", "gold"] * (N // 2), "i": range(N)}).to_parquet(d / "examples.parquet")
    np.save(d / "activations.npy", np.zeros((N, L, H), dtype=np.float16))
    return d


def _bad_copy(root: Path, name: str, mutate) -> str:
    d = _vectors_folder(root / name)
    mutate(d)
    return str(d)


def _set_tensor(d: Path, name: str, value: float) -> None:
    t = {k: torch.ones(L, H) for k in ("mold", "gold", "path")}
    t[name][1, 3] = value
    save_file(t, str(d / "vectors.safetensors"))


def _edit_meta(d: Path, **model) -> None:
    meta = json.loads((d / "meta.json").read_text())
    meta["model"].update(model)
    (d / "meta.json").write_text(json.dumps(meta))


def _unwritable_folder(root: Path) -> Path | None:
    """A folder this process cannot write in: a mode-555 one, or /sys when root ignores modes."""
    ro = root / "readonly"
    ro.mkdir(exist_ok=True)
    ro.chmod(0o555)
    for cand in (ro, Path("/sys")):
        try:
            tempfile.TemporaryFile(dir=cand).close()
        except OSError:
            return cand
    return None


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_inputs")
    good = _vectors_folder(root / "good")
    f = {"root": root, "good": str(good)}
    safet = (good / "vectors.safetensors").read_bytes()
    f["corrupt"] = _bad_copy(root, "corrupt", lambda d: (d / "vectors.safetensors").write_bytes(b"garbage!" * 20))
    f["empty"] = _bad_copy(root, "empty", lambda d: (d / "vectors.safetensors").write_bytes(b""))
    f["truncated"] = _bad_copy(root, "truncated", lambda d: (d / "vectors.safetensors").write_bytes(safet[: len(safet) // 2]))
    f["nan"] = _bad_copy(root, "nan", lambda d: _set_tensor(d, "mold", float("nan")))
    f["inf"] = _bad_copy(root, "inf", lambda d: _set_tensor(d, "gold", float("inf")))
    f["meta_model"] = _bad_copy(root, "meta_model", lambda d: _edit_meta(d, model_id="smollm2-135m-instruct"))
    f["meta_dims"] = _bad_copy(root, "meta_dims", lambda d: _edit_meta(d, hidden_size=576))
    f["meta_json"] = _bad_copy(root, "meta_json", lambda d: (d / "meta.json").write_text('{"model": '))
    f["acts_truncated"] = _bad_copy(root, "acts_truncated",
                                    lambda d: (d / "activations.npy").write_bytes((d / "activations.npy").read_bytes()[:300]))
    (root / "empty.pt").write_bytes(b"")
    (root / "garbage.pt").write_bytes(b"\x80\x04 not a pickle")
    torch.save({"v": torch.ones(H)}, root / "dict.pt")
    torch.save(torch.full((H,), float("nan")), root / "nan.pt")
    (root / "an").mkdir()
    (root / "an" / "layer_choice.json").write_text('{"mold": 2,')
    (root / "stories.json").write_text('{"emotions": [')
    (root / "a_file").write_text("x")
    (root / "not_a_model").mkdir()
    (root / "not_a_model" / "README").write_text("x")
    f["readonly"] = _unwritable_folder(root)
    return f


@pytest.fixture
def no_model(monkeypatch):
    """Loading a model fails the test: the cases below must be refused before."""

    def load_model(*a, **k):
        raise AssertionError("slow work started: load_model was called")

    monkeypatch.setattr(training.models, "load_model", load_model)


def _run(argv, capsys) -> tuple[int, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def _assert_one_line_exit_2(code, err, expect: str | None = None):
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1, err
    assert "internal error" not in err and "Traceback" not in err, err
    if expect is not None:
        assert expect in lines[0], lines[0]


def _steer(f, vectors, *extra):
    return ["steer", "--model", "tiny", "--layer", "1", "--max-new-tokens", "2", "--vectors", vectors, *extra, "hi"]


def _eval(f, *extra, name="sentiment", out=None):
    return ["steer-eval", name, "--model", "tiny", "--layer", "1", "--vectors", f["good"], "--out", out or f["root"] / "eval_out", *extra]


def _analyze(f, vectors=None, *extra):
    return ["analyze", "--vectors", vectors or f["good"], "--out", f["root"] / "analyze_out", "--no-progress", *extra]


def _extract(f, *extra, out=None):
    return ["extract", "--model", "tiny", "-n", "2", "--out", out or f["root"] / "extract_out", "--no-progress", *extra]


def _train_eval(f, *extra, out=None):
    return ["train", "eval", "--model", "tiny", "--n-mazes", "1", "--out", out or f["root"] / "te.parquet", "--no-progress", *extra]


CASES = {
    # vector files and their meta
    "corrupt vectors.safetensors": (lambda f: _steer(f, f["corrupt"]), "vectors.safetensors is not a readable safetensors file"),
    "empty vectors.safetensors": (lambda f: _steer(f, f["empty"]), "vectors.safetensors is not a readable safetensors file"),
    "truncated vectors.safetensors": (lambda f: _steer(f, f["truncated"]), "vectors.safetensors is not a readable safetensors file"),
    "analyze: corrupt vectors": (lambda f: _analyze(f, f["corrupt"]), "is not a readable safetensors file"),
    "empty .pt": (lambda f: _steer(f, f["root"] / "empty.pt"), "empty.pt is an empty file"),
    "garbage .pt": (lambda f: _steer(f, f["root"] / "garbage.pt"), "garbage.pt is not a readable torch file"),
    "dict .pt": (lambda f: _steer(f, f["root"] / "dict.pt"), "holds a dict, not a tensor"),
    "NaN .pt": (lambda f: _steer(f, f["root"] / "nan.pt"), "NaN or infinite"),
    "NaN in vectors": (lambda f: _steer(f, f["nan"]), "'mold' has NaN or infinite values (layers 1)"),
    "inf in vectors": (lambda f: _steer(f, f["inf"]), "'gold' has NaN or infinite values"),
    "meta.json: other model (steer)": (lambda f: _steer(f, f["meta_model"]), "holds vectors of model 'smollm2-135m-instruct'"),
    "meta.json: other model (--control)": (lambda f: _steer(f, f["good"], "--control", f["meta_model"]), "--control"),
    "meta.json: other size (steer)": (lambda f: _steer(f, f["meta_dims"]), "meta.json says model.hidden_size = 576"),
    "meta.json: other size (analyze)": (lambda f: _analyze(f, f["meta_dims"]), "meta.json says model.hidden_size = 576"),
    # bad JSON and truncated arrays name the file
    "bad meta.json (steer)": (lambda f: _steer(f, f["meta_json"]), "meta.json is not valid JSON"),
    "bad meta.json (analyze)": (lambda f: _analyze(f, f["meta_json"]), "meta.json is not valid JSON"),
    "bad layer_choice.json": (lambda f: ["steer", "--model", "tiny", "--analysis", f["root"] / "an", "--vectors", f["good"], "hi"],
                              "layer_choice.json is not valid JSON"),
    "bad --stories (analyze)": (lambda f: _analyze(f, None, "--stories", f["root"] / "stories.json"), "stories.json is not valid JSON"),
    "bad --stories (reproduce)": (lambda f: ["reproduce", "--preset", "smoke", "--out", f["root"] / "rep", "--stories", f["root"] / "stories.json"],
                                  "stories.json is not valid JSON"),
    "truncated activations.npy": (lambda f: _analyze(f, f["acts_truncated"]), "activations.npy is not a readable .npy file"),
    # numbers
    "--alpha nan": (lambda f: _steer(f, f["good"], "--alpha", "nan"), "argument --alpha"),
    "--alpha inf": (lambda f: _steer(f, f["good"], "--alpha", "inf"), "argument --alpha"),
    "--alpha empty": (lambda f: _steer(f, f["good"], "--alpha", ""), "argument --alpha"),
    "--alpha ,": (lambda f: _steer(f, f["good"], "--alpha", ","), "argument --alpha"),
    "--alpha 0:inf:1": (lambda f: _steer(f, f["good"], "--alpha", "0:inf:1"), "argument --alpha"),
    "--alphas nan (eval)": (lambda f: _eval(f, "--alphas", "-4,nan"), "argument --alphas"),
    "--max-new-tokens 0 (steer)": (lambda f: _steer(f, f["good"], "--max-new-tokens", "0"), "argument --max-new-tokens"),
    "--max-new-tokens 0 (eval)": (lambda f: _eval(f, "--max-new-tokens", "0"), "argument --max-new-tokens"),
    "--temperature -1": (lambda f: _steer(f, f["good"], "--temperature", "-1"), "argument --temperature"),
    "--temperature inf": (lambda f: _steer(f, f["good"], "--temperature", "inf"), "argument --temperature"),
    "--temperature 0 with k samples (eval)": (lambda f: _eval(f, "--temperature", "0"), "--temperature 0 is greedy"),
    "--temperature 0 (train eval samples)": (lambda f: _train_eval(f, "--temperature", "0"), "argument --temperature"),
    "--top-k 0": (lambda f: _analyze(f, None, "--top-k", "0"), "argument --top-k"),
    "--k 0": (lambda f: _eval(f, "--k", "0"), "argument --k"),
    "--n-problems 0": (lambda f: _eval(f, "--n-problems", "0", name="backtracking"), "argument --n-problems"),
    "--n-problems -3": (lambda f: _eval(f, "--n-problems", "-3", name="confidence"), "argument --n-problems"),
    "--per-category -1": (lambda f: _eval(f, "--per-category", "-1", name="refusal"), "argument --per-category"),
    "--batch-size 0 (eval)": (lambda f: _eval(f, "--batch-size", "0"), "argument --batch-size"),
    "--batch-size 0 (analyze)": (lambda f: _analyze(f, None, "--batch-size", "0"), "argument --batch-size"),
    "--batch-size 0 (extract)": (lambda f: _extract(f, "--batch-size", "0"), "argument --batch-size"),
    "--batch-mazes 0": (lambda f: _train_eval(f, "--batch-mazes", "0"), "argument --batch-mazes"),
    "--device gpu": (lambda f: _steer(f, f["good"], "--device", "gpu"), "unknown device 'gpu'"),
    # cuda:64 is refused on every machine: no CUDA here, or no 65th GPU where there is CUDA
    "--device cuda:64 (extract)": (lambda f: _extract(f, "--device", "cuda:64"), "argument --device"),
    "--device cuda:64 (train rl)": (lambda f: ["train", "rl", "--model", "tiny", "--out", f["root"] / "rl", "--device", "cuda:64"],
                                              "argument --device"),
    "env sample --size 99999999": (lambda f: ["env", "sample", "--size", "99999999"], "argument --size"),
    "--layer past the vectors": (lambda f: _steer(f, f["good"], "--layer", "9"), "--layer must be in 0..3"),
    # paths
    "--out an existing file (eval)": (lambda f: ["steer-eval", "sentiment", "--model", "tiny", "--vectors", f["good"], "--out", f["root"] / "a_file"],
                                      "is an existing file"),
    "--out an existing file (extract)": (lambda f: ["extract", "--model", "tiny", "--out", f["root"] / "a_file"], "is an existing file"),
    "--out an existing file (analyze)": (lambda f: ["analyze", "--vectors", f["good"], "--out", f["root"] / "a_file"], "is an existing file"),
    "--out an existing file (train rl)": (lambda f: ["train", "rl", "--model", "tiny", "--out", f["root"] / "a_file"], "is an existing file"),
    "--out below a file": (lambda f: _extract(f, out=f["root"] / "a_file" / "sub"), "is a file, so"),
    "--out a folder (train eval)": (lambda f: _train_eval(f, out=f["root"] / "an"), "is a folder, but --out names a file"),
    "--model a folder but not a model (steer)": (lambda f: ["steer", "--model", f["root"] / "not_a_model", "--vectors", f["good"], "hi"],
                                                 "holds no config.json, so it is not a model"),
    "--checkpoint missing (mechanics drift)": (lambda f: ["mechanics", "drift", "--model", "tiny", "--checkpoint", f["root"] / "missing",
                                                         "--out", f["root"] / "drift"], "does not exist"),
    "--checkpoint a file (train eval)": (lambda f: _train_eval(f, "--checkpoint", f["root"] / "a_file"), "is a file"),
    "--checkpoint not a model (extract)": (lambda f: _extract(f, "--checkpoint", f["root"] / "not_a_model"),
                                           "holds neither config.json"),
    "--start-checkpoint missing (mechanics anatomy)": (lambda f: ["mechanics", "anatomy", "--model", "tiny", "--start-checkpoint",
                                                                  f["root"] / "missing", "--out", f["root"] / "anatomy"], "does not exist"),
    "--model a folder but not a model (train rl)": (lambda f: ["train", "rl", "--model", f["root"] / "not_a_model", "--out", f["root"] / "rl"],
                                                    "holds no config.json, so it is not a model"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_and_exit_2_before_any_model_is_loaded(case, files, no_model, capsys):
    build, expect = CASES[case]
    code, err = _run(build(files), capsys)
    _assert_one_line_exit_2(code, err, expect)


@pytest.mark.parametrize("command", ["eval", "extract", "train eval"])
def test_out_in_a_read_only_folder(command, files, no_model, capsys):
    ro = files["readonly"]
    if ro is None:
        pytest.skip("no unwritable folder on this machine")
    argv = {"eval": _eval(files, out=ro / "sub"), "extract": _extract(files, out=ro / "sub"),
            "train eval": _train_eval(files, out=ro / "e.parquet")}[command]
    code, err = _run(argv, capsys)
    _assert_one_line_exit_2(code, err, "cannot write in")


def test_train_prints_no_library_warning(tmp_path):
    """transformers' 2-line FutureWarning (past_key_values) used to follow every train command."""
    out = tmp_path / "e.parquet"
    r = subprocess.run([sys.executable, "-m", "welfare_axis.cli", "train", "eval", "--model", "tiny", "--n-mazes", "1", "--size", "5",
                        "--n-moves", "1", "--no-progress", "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == "", r.stderr


def test_model_not_found_locally_is_one_line_without_contacting_a_hub(tmp_path):
    """With a proxy that records connections and HF_HUB_OFFLINE unset: no connection, one line, exit 2."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    srv.settimeout(0.2)
    port, hits, stop = srv.getsockname()[1], [], threading.Event()

    def accept():
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            hits.append(1)
            conn.close()

    threading.Thread(target=accept, daemon=True).start()
    proxy = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "WELFARE_AXIS_ALLOW_DOWNLOAD", "NO_PROXY", "no_proxy")}
    env.update(HTTPS_PROXY=proxy, HTTP_PROXY=proxy, https_proxy=proxy, http_proxy=proxy, HF_HOME=str(tmp_path / "hf"),
               PYTHONPATH=os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")])))
    code = "import sys; from welfare_axis.cli import main; sys.exit(main(sys.argv[1:]))"
    try:
        for name in ("some-org/some-model", "runs/mistyped"):  # an HF id not in the cache; a relative path that is not there
            r = subprocess.run([sys.executable, "-c", code, "train", "eval", "--model", name, "--n-mazes", "1",
                                "--out", str(tmp_path / "e.parquet")], env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
            assert hits == [], f"{name}: {len(hits)} connection(s) to the proxy"
            _assert_one_line_exit_2(r.returncode, r.stderr, "not in the local Hugging Face cache")
            assert name in r.stderr and "--allow-download" in r.stderr and str(tmp_path / "hf") in r.stderr
    finally:
        stop.set()
        srv.close()


def test_allow_download_flag_and_environment_variable(monkeypatch):
    from training.models import ModelLoadError, check_model_name, downloads_allowed

    monkeypatch.delenv("WELFARE_AXIS_ALLOW_DOWNLOAD", raising=False)
    assert not downloads_allowed()
    with pytest.raises(ModelLoadError, match="--allow-download"):
        check_model_name("some-org/not-cached-model")
    assert check_model_name("some-org/not-cached-model", allow_download=True) == "some-org/not-cached-model"
    monkeypatch.setenv("WELFARE_AXIS_ALLOW_DOWNLOAD", "1")
    assert downloads_allowed() and check_model_name("some-org/not-cached-model") == "some-org/not-cached-model"
    from welfare_axis.cli import build_parser

    args = build_parser().parse_args(["steer", "--allow-download", "--vectors", "v", "hi"])
    assert args.allow_download


# -- random bad values -------------------------------------------------------------------------------------------

TEMPLATES = {  # command -> (argv before the option, options with numbers, options with paths)
    "steer": (lambda f: ["steer", "--model", "tiny", "--vectors", f["good"]],
              ["--alpha", "--max-new-tokens", "--temperature", "--width", "--layer", "--seed", "--device"], ["--vectors", "--control", "--model"]),
    "eval": (lambda f: ["steer-eval", "sentiment", "--model", "tiny", "--vectors", f["good"], "--out", f["root"] / "h_eval"],
             ["--alphas", "--k", "--max-new-tokens", "--temperature", "--batch-size", "--n-problems", "--per-category", "--layer"],
             ["--out", "--vectors", "--analysis"]),
    "extract": (lambda f: ["extract", "--model", "tiny", "--out", f["root"] / "h_extract"],
                ["-n", "--batch-size", "--max-moves", "--seed", "--gguf-layer", "--size", "--wind"], ["--out", "--model"]),
    "analyze": (lambda f: ["analyze", "--vectors", f["good"], "--out", f["root"] / "h_analyze"],
                ["--batch-size", "--top-k", "--emotion-layer", "--logit-layer", "--n-generated", "--seed"],
                ["--vectors", "--control", "--out", "--stories", "--neutral"]),
    "train eval": (lambda f: ["train", "eval", "--model", "tiny", "--out", f["root"] / "h_te.parquet"],
                   ["--n-mazes", "--temperature", "--batch-mazes", "--seed", "--size", "--n-moves", "--wind"], ["--out", "--model", "--baseline"]),
    "env sample": (lambda f: ["env", "sample", "-n", "1"], ["--size", "--wind", "--seed"], []),
}
NUMBERS = st.one_of(
    st.integers(-(10**12), 10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", ",", " ", "nan", "-inf", "inf", "0:inf:1", "1e999", "0x10", "1,,", "4:-4:2", "-1e9:1e9:1e-9", "0", "-1", "1"]),
    st.text(max_size=6),
)


def _paths(f):
    root = f["root"]
    return st.sampled_from([str(p) for p in (root / "missing", root / "a_file", root / "an", root / "not_a_model", root / "garbage.pt",
                                             root / "stories.json", Path(f["corrupt"]), Path(f["meta_json"]), root / "a_file" / "x",
                                             root / "missing" / "deeper")] + ["", "/sys/x", "a/b"])


class _Stop(UserError):
    pass


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_bad_values_exit_0_or_2_with_at_most_one_line(data, files, monkeypatch, capsys):
    def load_model(*a, **k):  # past validation: stop here (a user error) rather than do slow work
        raise _Stop("stop: validation passed")

    monkeypatch.setattr(training.models, "load_model", load_model)
    command = data.draw(st.sampled_from(sorted(TEMPLATES)))
    head, numeric, paths = TEMPLATES[command]
    argv = head(files)
    for _ in range(data.draw(st.integers(1, 2))):
        if paths and data.draw(st.booleans()):
            argv += [data.draw(st.sampled_from(paths)), data.draw(_paths(files))]
        else:
            argv += [data.draw(st.sampled_from(numeric)), data.draw(NUMBERS)]
    if command in ("steer",):
        argv.append("hi")
    t = time.time()
    code, err = _run(argv, capsys)
    assert code in (0, 2), (argv, err)
    assert "internal error" not in err and "Traceback" not in err, (argv, err)
    assert len(err.strip().splitlines()) <= 1, (argv, err)
    assert time.time() - t < 20, argv
