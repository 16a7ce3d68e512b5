"""`welfare-axis calibrate`: the power and false-positive rate of the protocol's read-outs, measured.

A known axis e is planted into the maze-naive model's own extraction activations (a reproduce
run's `extract_naive`) and every claim's primary statistic is run on the planted activations by
the protocol's own code, verdict functions included. Each cell of the design is repeated over
seeds, so a detection rate is a rate with a CI, not one pass:

* strengths: ||e|| = strength x the natural ||mean Gold - mean Mold|| of the naive activations
  at the plant layer; per-move noise: each move's plant is scaled by max(0, 1 + noise x N(0, 1));
* alignment: e = c x valence + sqrt(1 - c^2) x a random direction orthogonal to it, with the
  valence direction from a source disjoint from the positive control's and claim 3's emotion
  stories (VADER-lexicon words in a neutral frame, `probes.emotion.lexicon_valence`); c = 0 is a random plant;
* null runs: no plant at all.

Every run draws two disjoint random subsets of the naive extraction, one per class each: one
plays the trained model (and carries the plant), the other the naive control, so a null run
compares two independent samples as a real run compares two models, and runs differ in their
data, not only in their null draws. Claim 4's tracking trajectories are read on the naive model
for both sides (the plant added on one), so its null runs cannot test the rule's naive side;
* the plant layer (`probes.plant.plant_layer`: floor(L/2), or below it) is one no fixed-layer claim reads. The plant is added
  at that layer and carried unchanged to every later layer: the residual stream's zeroth-order
  propagation of a direction written at one block. Read-outs that need a forward pass through a
  planted model (claim 5's finite-alpha confirmation) steer the naive model with the planted
  vectors, exactly as a reproduce run does.

What this measures: whether each read-out detects an axis of a given size and alignment in real
activations with their real nuisances, and how often it reports one that is not there. What it
does not: how a trained model's later blocks transform a written direction (first and higher
orders), which only a trained model shows.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from probes.metrics import diff_of_means
from probes.protocol import PROTOCOL, Protocol


@dataclass
class CalibrationConfig:
    """The calibration design; every field is a flag of `welfare-axis calibrate`."""

    strengths: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0)  # plant norm as a multiple of the natural ||mean Gold - mean Mold||
    alignments: tuple[float, ...] = (0.3, 0.6, 1.0)  # cos(plant, lexicon valence direction); random plants are c = 0
    seeds: int = 5  # repeats of every planted cell (examples drawn, plant draw, noise, maze splits, null directions)
    null_seeds: int = 20  # runs without a plant: the false-positive rates
    n_per_class: int | None = None  # examples per class for each side (None: half the naive extraction's, at most 800)
    noise: float = 0.5  # per-move relative SD of the plant's size
    plant_layer: int | None = None  # None: probes.plant.plant_layer (floor(L/2), or below it if a fixed-layer claim reads that)
    confirm: bool = True  # run claim 5's finite-alpha confirmation where the family test passes (a forward pass per prompt)
    protocol: Protocol = field(default_factory=lambda: PROTOCOL)


def two_sides(examples: pd.DataFrame, n_per_class: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint random sets of row indices with `n_per_class` examples of each class (sorted): "trained" and "naive"."""
    a, b = [], []
    for k in np.unique(examples["kind"].to_numpy()):
        idx = rng.permutation(np.flatnonzero(examples["kind"].to_numpy() == k))
        if len(idx) < 2 * n_per_class:
            raise ValueError(f"the naive extraction has {len(idx)} examples of {k}; two sides of {n_per_class} need {2 * n_per_class}")
        a.append(idx[:n_per_class])
        b.append(idx[n_per_class : 2 * n_per_class])
    return np.sort(np.concatenate(a)), np.sort(np.concatenate(b))


def plant_direction(valence: np.ndarray, alignment: float, rng: np.random.Generator) -> np.ndarray:
    """A unit direction with cos `alignment` to the unit `valence` (a random direction for 0)."""
    r = rng.standard_normal(len(valence))
    r -= (r @ valence) * valence
    r /= np.linalg.norm(r)
    return alignment * valence + np.sqrt(max(0.0, 1 - alignment**2)) * r


def planted(acts: np.ndarray, signs: np.ndarray, e: np.ndarray, layer: int, size: np.ndarray) -> np.ndarray:
    """acts [N, L, H] with signs[i] x size[i] x e added at `layer` and every later layer (float64 copy)."""
    out = np.asarray(acts, dtype=np.float64).copy()
    out[:, layer:, :] += (signs * size)[:, None, None] * e[None, None, :]
    return out


def outcome_signs(kinds: np.ndarray) -> np.ndarray:
    return np.where(kinds == "gold", 1.0, np.where(kinds == "mold", -1.0, 0.0))


def cells(cfg: CalibrationConfig) -> list[dict]:
    """Every run of the design: null runs, random plants and aligned plants, each `cfg.seeds` times."""
    out = [{"plant": "none", "strength": 0.0, "alignment": float("nan"), "seed": s} for s in range(cfg.null_seeds)]
    for strength in cfg.strengths:
        for s in range(cfg.seeds):
            out.append({"plant": "random", "strength": strength, "alignment": 0.0, "seed": s})
            out += [{"plant": "valence", "strength": strength, "alignment": c, "seed": s} for c in cfg.alignments]
    return out


def _wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, float(centre - half)), min(1.0, float(centre + half))  # rounding can step past 0 or 1 at k = 0 or n


def rate_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Detection rate (verdict "reproduced") per claim and cell, with a 95% Wilson interval."""
    out = []
    for keys, g in rows.groupby(["plant", "strength", "alignment", "claim"], dropna=False):
        k, n = int((g["verdict"] == "reproduced").sum()), len(g)
        lo, hi = _wilson(k, n)
        out.append(dict(zip(("plant", "strength", "alignment", "claim"), keys), detected=k, runs=n, rate=k / n, ci_low=lo, ci_high=hi))
    return pd.DataFrame(out)


@dataclass
class Fixed:
    """What every cell shares, computed once on the maze-naive model."""

    acts: np.ndarray  # [N, L, H] extraction activations (naive)
    examples: pd.DataFrame
    n_per_class: int  # examples per class on each side of a run
    track_acts: np.ndarray  # [2 x states, L, H] paired tracking trajectories
    track_kinds: np.ndarray
    track_state: np.ndarray
    lens: tuple  # claim 2's (W_U, gain, failure mask)
    emotion_vectors: dict  # claim 3's emotion vectors at the emotion layer
    emotion_valence: dict
    grads: object  # claim 5's LogOddsGradients over the band
    valence_band: np.ndarray  # the positive control (stories half a) per band layer
    lexicon: np.ndarray  # the plant's valence source (unit), at the plant layer
    natural: float  # ||mean Gold - mean Mold|| at the plant layer
    layer: int


def diffs_of_means(acts: np.ndarray, labels: np.ndarray) -> dict:
    """{k: [L, H]} mean(k) - mean(rest) at every layer (the extraction recipe, `probes.metrics.diff_of_means`)."""
    return {k: diff_of_means(acts, labels, k) for k in ("mold", "gold", "path")}


def prepare(model, tok, naive_dir: Path, cfg: CalibrationConfig, seed: int = 0, progress: bool = False) -> Fixed:
    from probes import emotion as emo
    from probes.analyze import lens_inputs
    from probes.capture import capture_texts
    from probes.extract import load_examples
    from probes.plant import plant_layer
    from probes.tracking import paired_tracking_texts
    from probes.vectors import ConceptVectors
    from steering.logodds import logodds_gradients
    from steering.prompts import sentiment_prompts

    p = cfg.protocol
    cv = ConceptVectors.load(naive_dir)
    L, H = cv.n_layers, cv.hidden_size
    examples, acts = load_examples(naive_dir, (L, H))
    acts = np.asarray(acts, dtype=np.float32)
    labels = examples["kind"].to_numpy()
    layer = plant_layer(L, p) if cfg.plant_layer is None else cfg.plant_layer
    natural = float(np.linalg.norm(acts[labels == "gold", layer].mean(0) - acts[labels == "mold", layer].mean(0)))
    n_side = cfg.n_per_class or min(800, int(examples["kind"].value_counts().min()) // 2)
    texts, kinds, _, state = paired_tracking_texts(tok, cv.meta, p.claim4.n_states, seed + 10_007)
    track = capture_texts(model, tok, texts, list(range(L)), "last", progress=progress).numpy().astype(np.float32)
    e_layer = p.fixed.emotion_layer(L)
    stories, neutral = emo.load_stories(None), emo.load_neutral(None)
    per, neut = emo.story_activations(model, tok, stories, neutral, [e_layer], 16, progress)
    ev = emo.emotion_vectors({k: a[:, 0] for k, a in per.items()}, emo.denoise_basis(neut[:, 0]))
    valence = {k: v.get("valence", np.nan) for k, v in stories["emotions"].items()}
    band = p.band.layers(L)
    grads = logodds_gradients(model, tok, sentiment_prompts(None), layers=band, progress=progress)
    vb = emo.valence_directions(model, tok, band, "a")
    return Fixed(acts, examples, n_side, track, kinds, state, lens_inputs(model, tok), ev, valence, grads, np.stack([vb[l] for l in band]),
                 emo.lexicon_valence(model, tok, layer), natural, layer)


def evaluate_cell(model, tok, fx: Fixed, cell: dict, cfg: CalibrationConfig) -> list[dict]:
    """The verdicts of claims 1-5 on one planted (or unplanted) copy of the activations."""
    from probes import emotion as emo
    from probes.analyze import claim2_reads, claim3_reads, claim4_reads
    from probes.antiparallel import claim1_statistics, half_b_at
    from probes.layer_choice import nuisance_strata, raw_layer_choice
    from probes.lens import failure_score, token_cosines
    from welfare_axis import claims

    p, seed = cfg.protocol, 1000 + int(cell["seed"])
    rng = np.random.default_rng([seed, int(round(100 * cell["strength"])), int(round(100 * np.nan_to_num(cell["alignment"], nan=2.0)))])
    t_idx, n_idx = two_sides(fx.examples, fx.n_per_class, rng)
    examples, naive_ex = fx.examples.iloc[t_idx].reset_index(drop=True), fx.examples.iloc[n_idx].reset_index(drop=True)
    acts, naive_acts = fx.acts[t_idx], fx.acts[n_idx]
    labels, strata = examples["kind"].to_numpy(), nuisance_strata(examples)
    track = fx.track_acts
    if cell["plant"] != "none":
        e = plant_direction(fx.lexicon, cell["alignment"], rng)
        norm = cell["strength"] * fx.natural

        def size(n):
            return norm * np.maximum(0.0, 1 + cfg.noise * rng.standard_normal(n))

        acts = planted(acts, outcome_signs(labels), e, fx.layer, size(len(labels)))
        track = planted(fx.track_acts, outcome_signs(fx.track_kinds), e, fx.layer, size(len(fx.track_kinds)))
    v, u = diffs_of_means(acts, labels), diffs_of_means(naive_acts, naive_ex["kind"].to_numpy())
    L = acts.shape[1]
    band = p.band.layers(L)
    c1 = claim1_statistics(acts, examples, band, p.nulls.draws, seed, p.claim1.whitener_fraction, strata, spaces=("raw",))["raw"]
    naive_c1 = claim1_statistics(naive_acts, naive_ex, band, p.nulls.draws, seed, p.claim1.whitener_fraction, nuisance_strata(naive_ex),
                                 spaces=("raw",))["raw"]
    c1["naive_at_layer"] = half_b_at(naive_c1, c1["layer"]) if c1.get("layer") is not None else float("nan")
    w_u, gain, mask = fx.lens
    lens_layer = p.fixed.logit_lens_layer(L)
    obs = {f"{t}_{k}": failure_score(token_cosines(w_u, gain, vs[k][lens_layer]), mask) for t, vs in (("v", v), ("u", u))
           for k in ("mold", "gold")}
    c2 = claim2_reads(fx.lens, acts, examples, lens_layer, obs, p.nulls.draws, seed)
    e_layer = p.fixed.emotion_layer(L)
    trained = emo.alignment(fx.emotion_vectors, v["gold"][e_layer], v["mold"][e_layer], fx.emotion_valence)
    val = np.array([fx.emotion_valence[k] for k in trained["names"]], dtype=float)
    trained.update(emo.bootstrap_over_emotions(trained["cos_gold"], trained["cos_mold"], val, seed=seed))
    naive_emotion = emo.alignment(fx.emotion_vectors, u["gold"][e_layer], u["mold"][e_layer], fx.emotion_valence)
    c3 = claim3_reads(fx.emotion_vectors, acts, examples, e_layer, fx.emotion_valence, trained, naive_emotion, p.nulls.draws, seed)
    ls = raw_layer_choice(acts, examples, seed=seed)
    cols = [ls["gold"], ls["mold"]]
    c4 = claim4_reads(track[:, cols], fx.track_acts[:, cols], fx.track_kinds, fx.track_state, ls, v, p.claim4.boot, seed, p.ci_percentiles)
    c5 = _claim5(model, tok, fx, acts, examples, v, band, cfg, seed)
    rows = [(1, claims.verdict_antiparallel(c1, p), c1.get("cos_half_b")), (2, claims.verdict_logit_lens(c2, p), c2.get("v_mold")),
            (3, claims.verdict_emotion(c3, p), c3.get("valence_slope")),
            (4, claims.verdict_tracking(c4, p), min(c4["trained_d_gold"], c4["trained_d_mold"])),
            (5, claims.verdict_steering(c5, p), (c5.get("axis") or {}).get("z"))]
    return [{**cell, "claim": i, "verdict": verdict, "value": float(value) if value is not None else float("nan")} for i, verdict, value in rows]


def _claim5(model, tok, fx: Fixed, acts: np.ndarray, examples: pd.DataFrame, v: dict, band: list[int], cfg: CalibrationConfig,
            seed: int) -> dict:
    """Claim 5's inputs for planted vectors: the family test of the axis and of the positive control, then the
    finite-alpha confirmation (only where both clear every family, the only case in which it can change the verdict)."""
    from probes import nulls as nl
    from steering.axis_claim import against_nulls, confirm, null_directions
    from steering.logodds import directional_effects
    from steering.prompts import sentiment_prompts

    p = cfg.protocol
    u = p.claim5.unit_ratio
    axis = np.stack([nl.unit(v["gold"][l]) - nl.unit(v["mold"][l]) for l in band])
    null_effects = {k: directional_effects(fx.grads, d, u).mean(-1) for k, d in null_directions(acts, examples, band, p.nulls.draws, seed).items()}
    res = {"axis": against_nulls(directional_effects(fx.grads, axis, u)[0].mean(-1), null_effects, band),
           "valence": against_nulls(directional_effects(fx.grads, fx.valence_band, u)[0].mean(-1), null_effects, band)}
    clear = all(f["p"] < p.nulls.alpha for r in res.values() for f in r["nulls"].values()) and all(r["clears_at_layer"] for r in res.values())
    if clear and cfg.confirm:  # otherwise the family test alone decides (verdict_steering does not read the confirmation)
        j = band.index(res["axis"]["layer"])
        res["confirm"] = confirm(model, tok, sentiment_prompts(None), axis[j], band[j], p.claim5.confirm_alpha, u,
                                 float(fx.grads.residual_norm[j]), p.ci_level)
    return res


def run_calibration(run_dir: str | Path, out_dir: str | Path, cfg: CalibrationConfig, device: str = "cpu", progress: bool = True) -> dict:
    """Calibrate the protocol on a reproduce run's naive extraction; resumable (finished cells are kept in cells.parquet)."""
    from tqdm.auto import tqdm

    from probes.analyze import load_model_from_meta
    from probes.vectors import ConceptVectors

    naive_dir = Path(run_dir) / "extract_naive"
    if not (naive_dir / "meta.json").exists():
        raise ValueError(f"{run_dir} has no finished extract_naive stage; run 'welfare-axis reproduce --out {run_dir} "
                         "--stop-after extract_naive' first")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model, tok = load_model_from_meta(ConceptVectors.load(naive_dir).meta, device)
    t0 = time.time()
    fx = prepare(model, tok, naive_dir, cfg, progress=progress)
    done_path = out / "cells.parquet"
    rows = pd.read_parquet(done_path) if done_path.exists() else pd.DataFrame()
    key = ["plant", "strength", "alignment", "seed"]
    done = set() if rows.empty else {_cell_key(r) for r in rows[key].to_dict("records")}
    todo = [c for c in cells(cfg) if _cell_key(c) not in done]
    summary: dict = {}
    for cell in tqdm(todo, desc="calibration cells", disable=not progress):
        rows = pd.concat([rows, pd.DataFrame(evaluate_cell(model, tok, fx, cell, cfg))], ignore_index=True)
        summary = _write_tables(out, rows, fx, cfg, time.time() - t0)  # after every run: a stopped calibration is still read
    return summary or _write_tables(out, rows, fx, cfg, time.time() - t0)


def _write_tables(out: Path, rows: pd.DataFrame, fx: Fixed, cfg: CalibrationConfig, wall: float) -> dict:
    from core.artifacts import atomic_write_json, atomic_write_parquet, atomic_write_text, provenance

    table = rate_table(rows)
    atomic_write_parquet(out / "cells.parquet", rows)
    atomic_write_parquet(out / "rates.parquet", table)
    summary = {"plant_layer": fx.layer, "natural_norm": fx.natural, "n_per_class": fx.n_per_class, "cells": len(rows) // 5,
               "wall_time_s": wall, **provenance(config={k: v for k, v in asdict(cfg).items() if k != "protocol"}, seed=0,
                                                 protocol=cfg.protocol.stamp())}
    atomic_write_json(out / "calibration.json", summary)
    atomic_write_text(out / "calibration.md", markdown_tables(table))
    return summary


def _cell_key(cell: dict) -> tuple:
    """A cell's identity as read back from parquet (NaN alignment of the null runs compares equal)."""
    a = float(cell["alignment"])
    return (str(cell["plant"]), round(float(cell["strength"]), 6), None if a != a else round(a, 6), int(cell["seed"]))


def markdown_tables(table: pd.DataFrame) -> str:
    """The power table (aligned and random plants) and the false-positive table (no plant), detection rate [95% CI]."""
    def cell(r):
        return f"{r['rate']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}] ({r['detected']}/{r['runs']})"

    lines = ["## Power (detection rate per claim; plants by strength x alignment with valence)", "",
             "| plant | strength | alignment | " + " | ".join(f"claim {i}" for i in range(1, 6)) + " |", "|---" * 8 + "|"]
    planted = table[table.plant != "none"]
    for (plant, strength, alignment), g in planted.groupby(["plant", "strength", "alignment"]):
        by = g.set_index("claim")
        lines.append(f"| {plant} | {strength:g} | {alignment:g} | " + " | ".join(cell(by.loc[i]) for i in range(1, 6)) + " |")
    lines += ["", "## False positives (no plant)", "", "| " + " | ".join(f"claim {i}" for i in range(1, 6)) + " |", "|---" * 5 + "|"]
    by = table[table.plant == "none"].set_index("claim")
    lines.append("| " + " | ".join(cell(by.loc[i]) for i in range(1, 6)) + " |")
    return "\n".join(lines) + "\n"
