"""Writing artifacts safely and traceably (used by every stage).

Every write goes to a temporary file in the target folder and is renamed into place,
so an interrupted run never leaves a half-written artifact; a command that writes a set of
files writes them into `atomic_folder`, so a failed run leaves none of the set. `provenance`
is the record every artifact carries: config, seed, model, package version, time, and the
hardware it ran on (`hardware`: CPU model and the instruction-set extensions that pick float
kernels, thread counts, BLAS, accelerator), since the same seed can give different floats elsewhere.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import shutil
import stat
import sys
import tempfile
import time
import warnings
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Iterator


def package_version() -> str:
    try:
        return metadata.version("welfare-axis")
    except metadata.PackageNotFoundError:
        return "unknown"


# Instruction-set extensions that change which float kernels run (and so the low bits of results):
# x86 names from /proc/cpuinfo's "flags", ARM's from "Features" (asimd on 64-bit, neon on 32-bit).
FLOAT_KERNEL_FLAGS = frozenset({"sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile",
                                "neon", "asimd"})
_CPUINFO = "/proc/cpuinfo"


def cpu_flags(cpuinfo: str) -> list[str]:
    """The FLOAT_KERNEL_FLAGS present in a /proc/cpuinfo text, sorted (the union over its processors)."""
    present: set[str] = set()
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features"):
            present.update(value.lower().split())
    return sorted(present & FLOAT_KERNEL_FLAGS)


def cpu_model_name(cpuinfo: str) -> str | None:
    """The CPU's model name in a /proc/cpuinfo text ("model name" on x86, "Hardware"/"Model" on some ARM), else None.
    x86's numeric "model" (a family's model number) is not a name."""
    for wanted in ("model name", "hardware", "model"):
        for line in cpuinfo.splitlines():
            key, sep, value = line.partition(":")
            value = value.strip()
            if sep and key.strip().lower() == wanted and value and not value.isdigit():
                return value
    return None


def _read_cpuinfo() -> str | None:
    try:
        with open(_CPUINFO, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def _usable_cpus() -> int | None:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no sched_getaffinity outside Linux
        return None


@functools.lru_cache(maxsize=1)
def _cpu() -> dict:
    """The CPU part of `hardware` (read once per process: it does not change while it runs)."""
    text = _read_cpuinfo()
    name = cpu_model_name(text) if text else None
    if not name:
        try:
            name = platform.processor() or None
        except OSError:
            name = None
    return {"cpu": name, "cpu_flags": cpu_flags(text) if text is not None else None, "machine": platform.machine() or None,
            "logical_cpus": os.cpu_count(), "usable_cpus": _usable_cpus()}


def _blas() -> list[dict] | None:
    """The BLAS libraries loaded in this process (threadpoolctl, when installed): library, version, core type, threads."""
    try:
        from threadpoolctl import threadpool_info

        with warnings.catch_warnings():  # it warns about clashing OpenMP runtimes: not this record's business
            warnings.simplefilter("ignore")
            libs = threadpool_info()
        return [{k: lib.get(k) for k in ("internal_api", "prefix", "version", "architecture", "num_threads")}
                for lib in libs if lib.get("user_api") == "blas"]
    except Exception:  # optional and informative only: never fail a write over it
        return None


@functools.lru_cache(maxsize=1)
def _accelerator(torch) -> dict | None:
    """The CUDA (or ROCm) devices torch sees, with the toolkit version; None without torch or a device.
    Cached per torch module: the devices a process sees do not change while it runs."""
    if torch is None:
        return None
    try:
        with warnings.catch_warnings():  # a driver too old for torch warns here; the record says None
            warnings.simplefilter("ignore")
            if not torch.cuda.is_available():
                return None
            return {"devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
                    "cuda": torch.version.cuda, "hip": getattr(torch.version, "hip", None)}
    except Exception:  # a broken driver must not fail a write
        return None


def hardware() -> dict:
    """Where this process runs: CPU model, float-kernel ISA extensions, logical and usable CPU counts,
    torch's intra-op threads, the loaded BLAS and the accelerator. Torch is only read when already
    imported (never imported here); a field that cannot be read is None, and this never raises."""
    try:
        cpu = dict(_cpu())
        cpu["cpu_flags"] = list(cpu["cpu_flags"]) if cpu["cpu_flags"] is not None else None  # not the cached list
    except Exception:
        cpu = dict.fromkeys(("cpu", "cpu_flags", "machine", "logical_cpus", "usable_cpus"))
    torch = sys.modules.get("torch")
    try:
        threads = torch.get_num_threads() if torch is not None else None
    except Exception:
        threads = None
    return {**cpu, "torch_threads": threads, "blas": _blas(), "accelerator": _accelerator(torch)}


def provenance(config: dict | None = None, seed: int | None = None, model: dict | None = None, **extra) -> dict:
    """The record stored with every artifact so it can be traced and re-run."""
    import numpy
    import torch

    return {
        "package": "welfare-axis",
        "package_version": package_version(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seed": seed,
        "config": config,
        "model": model,
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__},
        "hardware": hardware(),
        **extra,
    }


def ordinary_permissions(path: str | os.PathLike) -> None:
    """Give `path` (a file, or a folder and everything in it) the modes of a plain write: 0666 for
    files and 0777 for folders and executables, less the umask (0644 and 0755 under the usual 022).

    Atomic writes need it: `tempfile.mkstemp`/`mkdtemp` make 0600/0700 and safetensors writes 0600,
    and the rename into place would keep those modes. Symlinks are left alone.
    """
    umask = os.umask(0)
    os.umask(umask)
    file_mode, dir_mode = 0o666 & ~umask, 0o777 & ~umask
    path = Path(path)
    if path.is_symlink():
        return
    entries = [path]
    if path.is_dir():
        for root, dirs, files in os.walk(path):
            entries += [Path(root, name) for name in dirs + files]
    for p in entries:
        mode = p.lstat().st_mode
        if stat.S_ISDIR(mode):
            os.chmod(p, dir_mode)
        elif stat.S_ISREG(mode):
            os.chmod(p, dir_mode if mode & 0o111 else file_mode)


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success rename it into place (with ordinary permissions)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix or ".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        ordinary_permissions(tmp)  # after the write: some writers (safetensors) replace the file with a 0600 one
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder for a set of outputs; on success they land in `path` together.

    A new `path` is the temporary folder renamed into place (one rename). Into an existing `path`
    each entry is renamed, replacing one of the same name (renames only, no copying). On failure
    the temporary folder is removed and `path` is as it was (not even created).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path if path.is_dir() else path.parent))
    try:
        yield tmp
        ordinary_permissions(tmp)  # mkdtemp makes 0700 and safetensors writes 0600; outputs are ordinary files
        if path.is_dir():
            for entry in sorted(tmp.iterdir()):
                dest = path / entry.name
                if dest.is_dir() and not dest.is_symlink():
                    shutil.rmtree(dest)  # a rename replaces only an empty folder
                os.replace(entry, dest)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove_orphaned_folders(folder: str | os.PathLike) -> None:
    """Remove the temporary folders `atomic_folder` left in `folder` when its process was killed mid-write."""
    for tmp in Path(folder).glob(".*.tmp"):
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def atomic_write_png(path: str | os.PathLike, fig, **savefig_kwargs) -> None:
    """Save a matplotlib figure as PNG atomically (a reader never sees half a figure)."""
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", **savefig_kwargs)


def atomic_write_parquet(path: str | os.PathLike, frame, metadata: dict | None = None) -> None:
    """Write a pandas DataFrame to parquet atomically; `metadata` goes into the file's key-value metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    if metadata is not None:
        kv = dict(table.schema.metadata or {})
        kv[b"welfare_axis"] = json.dumps(metadata, default=str).encode()
        table = table.replace_schema_metadata(kv)
    with atomic_path(path, suffix=".parquet") as tmp:
        pq.write_table(table, tmp)


def read_parquet_metadata(path: str | os.PathLike) -> dict:
    import pyarrow.parquet as pq

    kv = pq.read_schema(path).metadata or {}
    raw = kv.get(b"welfare_axis")
    return json.loads(raw) if raw else {}
