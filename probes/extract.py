"""Extract concept vectors v_Mold, v_Gold, v_Path (or the naive model's u_*) for every layer.

Recipe (docs/study.md, "Concept vectors"): per class, N scripted trajectories in fresh mazes
whose last move enters a tile of the class; rendered with the chat template up to the
final direction letter (no end-of-turn token); residual stream read at that last token at
every layer (block inputs, probes/layers.py). v_k = mean(class k) - mean(other classes
pooled), unnormalised.

Two designs (`DESIGNS`): "independent" is the paper's, one maze per example; "paired" reads
N maze states, each with one example per class that differ only in the final letter
(envs.paired_trajectories). Paired differences of means carry no maze-to-maze noise, and the
three renders share their prefix, which runs once into a KV cache (probes/capture.py), so an
example costs about a third of an independent one. Both balance final directions and lengths
over classes. A planted model (probes/plant.py) reads the whole render in each forward, so
it is always captured on full sequences.

Memory: the vectors come from float64 running class sums (O(layers x hidden)). With
`out_dir`, each example's activations are also written, float16, to a memory-mapped
`activations.npy` [N, L, H] on disk (RAM stays flat in N) for the held-out layer choice and
logistic probes of `analyze`; `examples.parquet` lists each row's class and maze seed.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from core.artifacts import atomic_folder, atomic_write_parquet, provenance
from envs import TILE_KINDS, MazeConfig, paired_trajectories, scripted_trajectories
from probes.capture import (
    common_prefix_length,
    iter_captures,
    iter_common_prefix_captures,
    iter_continuation_captures,
    last_token_spans,
    tokenize_texts,
)
from probes.layers import LAYER_CONVENTION
from probes.plant import planted_info
from training.models import model_info
from probes.catalog import DESIGNS
from probes.metrics import vectors_from_sums
from probes.vectors import ConceptVectors
from training.chat import render_up_to_last_assistant
from training.models import pad_token_id



@dataclass
class ExtractConfig:
    n_per_class: int = 300
    seed: int = 0
    batch_size: int = 16
    max_moves: int | None = None  # None: the maze's n_moves (15), the paper's 1..15 moves
    design: str = "independent"  # one of DESIGNS


def build_examples(tokenizer, n_per_class: int, seed: int, maze_config: MazeConfig | None, max_moves: int | None,
                   design: str = "independent"):
    """(texts, examples DataFrame) for the scripted Mold/Gold/Path trajectories, class-blocked.

    `state` numbers the maze states: one per example ("independent"), shared by the three
    classes' examples of a state ("paired": row k * n_per_class + s is class k of state s)."""
    if design not in DESIGNS:
        raise ValueError(f"unknown extraction design {design!r}; use one of {', '.join(DESIGNS)}")
    if design == "paired":
        states = paired_trajectories(n_per_class, seed=seed, config=maze_config, max_moves=max_moves)
        per_class = {k: [st[k] for st in states] for k in TILE_KINDS}
    else:
        per_class = {k: scripted_trajectories(k, n_per_class, seed=seed, config=maze_config, max_moves=max_moves) for k in TILE_KINDS}
    texts, rows = [], []
    for c, kind in enumerate(TILE_KINDS):
        for s, traj in enumerate(per_class[kind]):
            texts.append(render_up_to_last_assistant(tokenizer, traj.messages))
            rows.append({"kind": kind, "maze_seed": traj.maze_seed, "final_direction": traj.final_direction, "n_moves": traj.n_moves,
                         "state": s if design == "paired" else c * n_per_class + s})
    return texts, pd.DataFrame(rows)


def shared_prefixes(ids: list[list[int]], n_per_class: int) -> tuple[list[list[int]], list[list[int]]] | None:
    """(prefix per state, final token per state and class) when, in every paired state, the
    classes' token lists differ only in their last token; None when they do not (a tokenizer
    that merges the letter into the text before it)."""
    n_classes = len(ids) // n_per_class
    prefixes, last = [], []
    for s in range(n_per_class):
        rows = [ids[c * n_per_class + s] for c in range(n_classes)]
        prefix = rows[0][:-1]
        if not prefix or any(r[:-1] != prefix for r in rows):
            return None
        prefixes.append(prefix)
        last.append([r[-1] for r in rows])
    return prefixes, last


def extract_vectors(
    model,
    tokenizer,
    n_per_class: int,
    seed: int = 0,
    maze_config: MazeConfig | None = None,
    batch_size: int = 16,
    progress: bool = True,
    max_moves: int | None = None,
    out_dir: str | Path | None = None,
    design: str = "independent",
    gguf_layer: int | None = None,
) -> ConceptVectors:
    """v_mold, v_gold, v_path for all layers; with `out_dir`, also save them plus per-example activations.

    `design`: "independent" (the paper's) or "paired" (see the module docstring); n_per_class
    is then the number of maze states. The files are written into a temporary folder that
    becomes `out_dir` at the end (all or nothing). `gguf_layer`: also write each vector at that
    layer as a llama.cpp control vector, `<name>_layer<l>.gguf`, into the same folder before it
    becomes `out_dir` (so a failed export leaves no folder behind)."""
    if n_per_class < 2:
        raise ValueError(f"n_per_class must be at least 2, got {n_per_class}")
    if design not in DESIGNS:
        raise ValueError(f"unknown extraction design {design!r}; use one of {', '.join(DESIGNS)}")
    args = (model, tokenizer, n_per_class, seed, maze_config, batch_size, progress, max_moves, design)
    if out_dir is None:
        if gguf_layer is not None:
            raise ValueError("gguf_layer needs out_dir (the control vectors are written there)")
        return _extract(*args, None)
    with atomic_folder(out_dir) as tmp:
        cv = _extract(*args, tmp)
        if gguf_layer is not None:
            for name in cv.names:
                cv.export_gguf(name, tmp / f"{name}_layer{gguf_layer}.gguf", layers=[gguf_layer])
        return cv


def _extract(model, tokenizer, n_per_class: int, seed: int, maze_config: MazeConfig | None, batch_size: int, progress: bool,
             max_moves: int | None, design: str, out_dir: Path | None) -> ConceptVectors:
    maze_config = maze_config or MazeConfig()
    t0 = time.time()
    texts, examples = build_examples(tokenizer, n_per_class, seed, maze_config, max_moves, design)
    ids = tokenize_texts(tokenizer, texts)
    # A planted model (probes/plant.py) reads whole sequences at forward time, so no KV-cache shortcut for it.
    planted = bool(planted_info(model))
    shared = shared_prefixes(ids, n_per_class) if design == "paired" and not planted else None
    cache_common = shared is None and not planted  # the prefix every trajectory shares, run once
    examples["n_tokens"] = [len(x) for x in ids]
    n_layers, hidden = model.config.num_hidden_layers, model.config.hidden_size
    layers = list(range(n_layers))
    labels = examples["kind"].to_numpy()
    sums = {k: np.zeros((n_layers, hidden), dtype=np.float64) for k in TILE_KINDS}
    counts = {k: int((labels == k).sum()) for k in TILE_KINDS}

    pad_id = pad_token_id(tokenizer)
    with contextlib.ExitStack() as stack:
        rows_file = None
        if out_dir is not None:
            tmp = out_dir / "activations.npy"  # out_dir is a temporary folder: no file in it is seen before all are done
            # Header via numpy, then plain seek+write per example: unlike a live memmap, written
            # pages are not held in this process's resident memory, so RAM stays flat in N.
            mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(len(texts), n_layers, hidden))
            offset = mm.offset
            del mm
            rows_file = stack.enter_context(open(tmp, "r+b"))
            row_bytes = n_layers * hidden * 2
        for idx, acts in _captures(model, ids, shared, cache_common, n_per_class, layers, batch_size, pad_id, progress):
            a = acts.numpy()
            for j, i in enumerate(idx):
                sums[labels[i]] += a[j]  # float64 running sums
                if rows_file is not None:
                    rows_file.seek(offset + i * row_bytes)
                    rows_file.write(a[j].astype(np.float16).tobytes())
        if rows_file is not None:
            rows_file.close()

    vecs = vectors_from_sums(sums, counts)
    info = model_info(model)
    model_dict = info.to_dict() if info is not None else {"model_id": type(model).__name__, "adapter": None}
    if planted_info(model):  # a planted axis (probes/plant.py) stands in for training
        model_dict["plant"] = planted_info(model)
    config = ExtractConfig(n_per_class=n_per_class, seed=seed, batch_size=batch_size, max_moves=max_moves, design=design)
    meta = provenance(config=config.__dict__, seed=seed, model=model_dict)
    meta.update(
        {
            "kind": "concept_vectors",
            "layer_convention": LAYER_CONVENTION,
            "n_layers": n_layers,
            "hidden_size": hidden,
            "read_position": "last token of render_up_to_last_assistant (the final direction letter)",
            "design": design,
            "shared_prefix_cache": shared is not None,
            "common_prefix_tokens": common_prefix_length(ids) if cache_common else 0,
            "n_per_class": counts,
            "maze_config": maze_config.to_dict(),
            "max_moves": max_moves or maze_config.n_moves,
            "final_direction_balance": {
                k: examples[examples.kind == k]["final_direction"].value_counts().sort_index().to_dict() for k in TILE_KINDS
            },
            "mean_tokens": float(examples["n_tokens"].mean()),
            "example_render": texts[0][-400:],
            "seconds": round(time.time() - t0, 2),
            "activations_file": "activations.npy (float16 [N, n_layers, hidden])" if out_dir is not None else None,
        }
    )
    cv = ConceptVectors(
        vectors={k: torch.from_numpy(v.astype(np.float32)) for k, v in vecs.items()},
        meta=meta,
        class_means={k: torch.from_numpy((sums[k] / counts[k]).astype(np.float32)) for k in TILE_KINDS},
    )
    if out_dir is not None:
        atomic_write_parquet(out_dir / "examples.parquet", examples, metadata=meta)
        cv.save(out_dir)
    return cv


def _captures(model, ids, shared, cache_common: bool, n_per_class: int, layers, batch_size: int, pad_id: int, progress: bool):
    """(example indices, activations [b, L, H]): each paired state's prefix once, the prefix common
    to all sequences once (`cache_common`), or full sequences."""
    if shared is None:
        if cache_common:
            yield from iter_common_prefix_captures(model, ids, layers, batch_size, pad_id, progress, "extract")
        else:
            yield from iter_captures(model, ids, last_token_spans(ids), layers, batch_size, pad_id, progress, "extract")
        return
    prefixes, last = shared
    for states, acts in iter_continuation_captures(model, prefixes, last, layers, batch_size, progress, "extract (paired)"):
        n_classes = acts.shape[1]
        idx = [c * n_per_class + s for s in states for c in range(n_classes)]
        yield idx, acts.reshape(len(states) * n_classes, *acts.shape[2:])


def load_examples(vectors_dir: str | Path, shape: tuple[int, int] | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """(examples table, activations memmap [N, L, H] float16) saved by `extract_vectors(out_dir=...)`.

    ValueError naming the file if either is unreadable (truncated, garbage) or they disagree with
    each other (N) or with `shape` (L, H: the folder's vectors)."""
    d = Path(vectors_dir)
    if not (d / "activations.npy").exists() or not (d / "examples.parquet").exists():
        raise FileNotFoundError(
            f"{d} has no activations.npy/examples.parquet; run 'welfare-axis extract --out {d}' "
            "(or extract_vectors(..., out_dir=...)) to save them"
        )
    fix = f"re-run 'welfare-axis extract --out {d}'"
    try:
        examples = pd.read_parquet(d / "examples.parquet")
    except Exception as e:  # ArrowInvalid, OSError
        raise ValueError(f"{d / 'examples.parquet'} is not a readable parquet file ({(str(e).strip().splitlines() or [type(e).__name__])[0]}); {fix}") from None
    try:
        acts = np.load(d / "activations.npy", mmap_mode="r")
    except Exception as e:  # truncated ("mmap length is greater than file size"), bad header, garbage
        raise ValueError(f"{d / 'activations.npy'} is not a readable .npy file ({(str(e).strip().splitlines() or [type(e).__name__])[0]}); {fix}") from None
    if acts.ndim != 3 or acts.shape[0] != len(examples) or (shape is not None and tuple(acts.shape[1:]) != tuple(shape)):
        want = f"[{len(examples)}, {', '.join(map(str, shape)) if shape else 'L, H'}]"
        raise ValueError(f"{d / 'activations.npy'} has shape {list(acts.shape)}, expected {want} (examples.parquet and the vectors); {fix}")
    return examples, acts
