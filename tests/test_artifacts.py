"""Artifacts get ordinary permissions: 0666/0777 less the umask, whatever temporary files or writers make."""

import os
import stat
import tempfile

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from core.artifacts import atomic_folder, atomic_path, atomic_write_json, atomic_write_parquet, atomic_write_png, ordinary_permissions


@pytest.fixture(params=[0o022, 0o027], ids=["umask022", "umask027"])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _modes(root) -> dict[str, int]:
    """Mode of `root` and of everything under it, by relative path."""
    out = {".": _mode(root)}
    for base, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(base, name)
            out[os.path.relpath(p, root)] = _mode(p)
    return out


def test_atomic_writes_make_ordinary_files(tmp_path, umask):
    with atomic_path(tmp_path / "v.safetensors") as tmp:
        save_file({"x": torch.zeros(2)}, str(tmp))  # safetensors itself writes 0600
    with atomic_path(tmp_path / "a.npy", suffix=".npy") as tmp:
        np.save(tmp, np.zeros(3))
    atomic_write_json(tmp_path / "c.json", {"a": 1})
    atomic_write_parquet(tmp_path / "m.parquet", pd.DataFrame({"a": [1, 2]}))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(1, 1))
    atomic_write_png(tmp_path / "f.png", fig, dpi=50)
    plt.close(fig)
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name in ("v.safetensors", "a.npy", "c.json", "m.parquet", "f.png"):
        assert _mode(tmp_path / name) == 0o666 & ~umask, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy", "c.json", "f.png", "m.parquet", "v.safetensors"]


def test_ordinary_permissions_fixes_a_temporary_folder_tree(tmp_path, umask):
    root = tempfile.mkdtemp(dir=tmp_path)  # 0700
    os.mkdir(os.path.join(root, "sub"), 0o700)
    save_file({"x": torch.zeros(2)}, os.path.join(root, "sub", "w.safetensors"))  # 0600
    script = os.path.join(root, "run.sh")
    with open(script, "w") as f:
        f.write("#!/bin/sh\n")
    os.chmod(script, 0o700)
    os.symlink("sub/w.safetensors", os.path.join(root, "link"))
    ordinary_permissions(root)
    modes = _modes(root)
    modes.pop("link")  # symlinks have no modes of their own
    assert modes == {".": 0o777 & ~umask, "sub": 0o777 & ~umask, "sub/w.safetensors": 0o666 & ~umask,
                     "run.sh": 0o777 & ~umask}


def test_checkpoint_folders_have_ordinary_permissions(tmp_path, umask):
    from training.checkpoint import save_checkpoint
    from training.policy import build_policy
    from training.config import config_from_preset

    for finetune in ("lora", "full"):
        model, tok = build_policy(config_from_preset("tiny", finetune=finetune))
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
        ckpt = save_checkpoint(tmp_path / finetune, 1, model, tok, opt, sched, rows=[])
        modes = _modes(ckpt)
        assert any(name.endswith(".safetensors") for name in modes), modes
        for name, mode in modes.items():
            want = 0o777 & ~umask if (ckpt / name).is_dir() else 0o666 & ~umask
            assert mode == want, (finetune, name, oct(mode))


def test_atomic_folder_outputs_are_ordinary_files(tmp_path, umask):
    (tmp_path / "existing").mkdir()
    for out in (tmp_path / "new", tmp_path / "existing"):  # one rename, and entry by entry into a folder
        with atomic_folder(out) as tmp:
            save_file({"x": torch.zeros(2)}, str(tmp / "v.safetensors"))  # safetensors itself writes 0600
            (tmp / "sub").mkdir(mode=0o700)
        modes = _modes(out)
        assert modes["v.safetensors"] == 0o666 & ~umask and modes["sub"] == 0o777 & ~umask
