"""Claim 4: do projections on v_Gold / v_Mold track goal achievement on fresh trajectories?

d_k = Cohen's d of projections on v_k at layer l*_k: k-final minus other-final (gold vs mold)
trajectories, pooled SD, after removing each final letter x length stratum's mean from the
activations (`probes.metrics.centre_within`). Why: the read token is the final direction letter,
the largest nuisance there, and it is not orthogonal to v_k (least of all after whitening, which
divides by the within-letter spread). Pooled over letters, the letter spread swamped the outcome:
on the cpu-small model d was ~0 while within letters it was several SDs. Both kinds have the same
mix of strata, so a stratum's mean weighs them equally and the comparison is gold vs mold within
each letter. Signed: both d_gold and d_mold are positive when the vectors track
in the expected direction (a large negative d is not tracking). Projections are computed in
raw, channel-standardised and whitened space (probes/channels.py `Spaces`: x and v mapped alike).
`bootstrap_paired_d` gives CIs: maze states resampled (each keeps its gold and mold trajectory), with
the same draws for every projection (the trained and the naive model read the same trajectories), so
differences are paired.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from envs import MazeConfig
from probes.capture import capture_texts
from probes.channels import Spaces
from probes.metrics import cohens_d
from training.chat import render_up_to_last_assistant


@dataclass
class Tracking:
    rows: pd.DataFrame  # model, vector_set, space, vector, layer, final, projection
    d: dict[tuple[str, str, str], float]  # (vector_set, space, concept) -> signed d
    projections: dict[tuple[str, str, str], np.ndarray]  # the same keys -> [N] projections (kinds' order)


def capture_tracking(model, tokenizer, texts, layers: dict[str, int], batch_size: int, progress: bool, tag: str) -> np.ndarray:
    """Last-token activations [N, 2, H] at (l*_gold, l*_mold)."""
    return capture_texts(model, tokenizer, texts, [layers["gold"], layers["mold"]], "last", batch_size=batch_size,
                         progress=progress, desc=f"tracking {tag}").numpy().astype(np.float64)


def track(acts: np.ndarray, kinds: np.ndarray, layers: dict[str, int], vector_sets: dict[str, dict[str, np.ndarray]],
          spaces: Spaces, tag: str) -> Tracking:
    """Projections of activations [N, 2, H] on each vector set ({"gold": [L, H], "mold": [L, H]}) in both spaces."""
    rows, ds, projections = [], {}, {}
    for set_name, vecs in vector_sets.items():
        for j, k in enumerate(("gold", "mold")):
            layer = layers[k]
            for space in Spaces.NAMES:
                p = spaces.apply(acts[:, j], layer, space) @ spaces.apply(vecs[k][layer], layer, space)
                other = "mold" if k == "gold" else "gold"
                ds[(set_name, space, k)] = cohens_d(p[kinds == k], p[kinds == other])
                projections[(set_name, space, k)] = p
                rows.append(pd.DataFrame({"model": tag, "vector_set": set_name, "space": space, "vector": k, "layer": layer,
                                          "final": kinds, "projection": p}))
    return Tracking(pd.concat(rows, ignore_index=True), ds, projections)


def paired_tracking_texts(tokenizer, meta: dict, n_states: int, seed: int) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Gold-final and mold-final trajectories from the same maze states (`envs.scripted.paired_trajectories`):
    one prompt, with Gold, Mold and Path all adjacent, and only the final move differs, so the prompt's
    content cannot tell the outcomes apart. Returns (texts, kinds, strata "final direction|moves", state index)."""
    from envs.scripted import paired_trajectories

    config = MazeConfig(**meta["maze_config"]) if meta.get("maze_config") else MazeConfig()
    texts, kinds, strata, state = [], [], [], []
    for i, trajs in enumerate(paired_trajectories(n_states, seed=seed, config=config, max_moves=meta.get("max_moves"))):
        for kind in ("gold", "mold"):
            t = trajs[kind]
            texts.append(render_up_to_last_assistant(tokenizer, t.messages))
            kinds.append(kind)
            strata.append(f"{t.final_direction}|{t.n_moves}")
            state.append(i)
    return texts, np.array(kinds), np.array(strata), np.array(state)


def pooled_d(p: np.ndarray, kinds: np.ndarray, concept: str) -> float:
    """Signed Cohen's d of projections p: concept-final minus other-final, pooled SD, no centring."""
    other = "mold" if concept == "gold" else "gold"
    return cohens_d(p[kinds == concept], p[kinds == other])


def bootstrap_paired_d(projections: dict, kinds: np.ndarray, state: np.ndarray, n_boot: int, seed: int) -> dict:
    """{key: [n_boot] signed pooled d} with maze states resampled (each state keeps its gold and mold
    trajectory), the same draws for every key, so differences between keys are paired."""
    rng = np.random.default_rng([seed, 77])
    states = np.unique(state)
    rows = {k: {s: np.flatnonzero((state == s) & (kinds == k))[0] for s in states} for k in ("gold", "mold")}
    draw = rng.choice(states, (n_boot, len(states)))
    idx = {k: np.vectorize(rows[k].get)(draw) for k in ("gold", "mold")}
    out = {}
    for key, p in projections.items():
        concept = key[-1]
        pos, neg = p[idx[concept]], p[idx["mold" if concept == "gold" else "gold"]]
        n = pos.shape[1]
        pooled = np.sqrt((pos.var(1, ddof=1) + neg.var(1, ddof=1)) / 2) if n > 1 else np.full(n_boot, np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[key] = (pos.mean(1) - neg.mean(1)) / pooled
    return out
