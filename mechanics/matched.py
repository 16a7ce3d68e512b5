"""Matched RL vs SFT: one start model continued with RL and with SFT on
scripted trajectories, compared at matched on-target progress, not at matched steps.

The two arms share everything but whose tokens are trained on: the start model, the LoRA
placement and rank (or full fine-tune), the optimizer, the learning rate and its cosine schedule,
the number of steps and the decisions per step (SFT continues the start model's own SFT task, scripted
trajectories of its `sft_n_moves` moves, as many per step as make RL's episodes x moves). RL keeps its entropy bonus: that is how this toolkit
trains with RL. Every `checkpoint_every` steps both arms checkpoint, and each checkpoint is read for
* on-target progress: the exact expected episode value of the first move on held-out mazes (the best
  total tile reward over the episode that starts with the chosen direction, wind ignored;
  training.evaluate.first_move_policy, no sampling) minus the start model's;
* off-target drift: KL(start || checkpoint) on the four off-target prompt sets (mechanics.drift),
  pooled as the equal-weight mean of the set means, and on held-out maze states.

The comparison (H1m in mechanics/hypotheses.py): the SFT arm's pooled off-target KL over the RL arm's
at the largest progress both arms reach, each read off its own curve by linear interpolation at
its first crossing of that level. The bootstrap resamples held-out mazes and off-target prompts
(the same draw for every checkpoint of both arms), so the matched level moves with the draw.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from core.artifacts import atomic_write_png
from core.stats import percentile_ci
from mechanics.examples import ON_TARGET
from mechanics.onestep import KINDS as ARMS  # the two arms are the probe's two update kinds, rl and sft

START = "start"  # the start model's row in the tables (step 0 of both arms)
PROGRESS = "expected_value"  # the first-move policy's column that progress is read from


def arm_configs(base, start_model: str) -> dict:
    """{"rl": TrainConfig, "sft": TrainConfig}: `base` (a TrainConfig) continued from `start_model`, SFT matched to RL.

    SFT continues the start model's own SFT task (`base`'s scripted trajectories of `sft_n_moves` moves) with RL's
    decisions per step: trained on RL's episode length instead, the scripted policy's random tie-breaks in later
    states raise the first move's entropy and the arm never improves the task."""
    rl = base.replace(model=str(start_model))
    moves = base.sft_view().maze.n_moves
    decisions = decisions_per_step(rl)
    if decisions % moves:
        raise ValueError(f"RL's {decisions} decisions per step are not a whole number of {moves}-move SFT trajectories; "
                         "change train.sft_n_moves or train.mazes_per_step")
    sft = rl.replace(sft_steps=rl.n_steps, sft_batch=decisions // moves, sft_lr=rl.lr, sft_schedule="cosine", sft_finetune=rl.finetune,
                     sft_checkpoint_every=rl.checkpoint_every)
    return {"rl": rl, "sft": sft}


def decisions_per_step(config) -> int:
    """Moves trained on per step: RL's episodes x moves, which `arm_configs` gives SFT too."""
    return config.n_episodes * config.maze.n_moves


def checkpoint_models(run_dir) -> list[tuple[int, Path]]:
    """[(step, model folder)] of a training run's checkpoints, in step order."""
    from training.checkpoint import checkpoint_dirs

    return [(int(d.name.removeprefix("step_")), d / "model") for d in checkpoint_dirs(run_dir)]


def read_checkpoint(start, model, tokenizer, sets: dict, maze_config, maze_seeds: list[int], temperature: float,
                    batch_size: int = 8) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(policy rows: maze_seed, expected_reward, expected_value; kl rows: set, id, kl) of one model against `start`."""
    from mechanics.drift import kl_table
    from training.evaluate import first_move_policy
    from training.models import pad_token_id

    policy = first_move_policy(model, tokenizer, maze_config, maze_seeds, temperature)[["maze_seed", "expected_reward", PROGRESS]]
    if model is start:  # KL(start || start) = 0 exactly: no forward needed
        rows = [{"set": name, "id": e.id, "kl": 0.0} for name, ex in sets.items() for e in ex]
        return policy, pd.DataFrame(rows)
    return policy, kl_table(start, model, sets, pad_token_id(tokenizer), batch_size)[["set", "id", "kl"]]


def _arrays(policy: pd.DataFrame, kl: pd.DataFrame) -> dict:
    """Per arm: steps [S] (0 = the start model), rewards [S, mazes], kl by set [S, n_set], start row included."""
    start_r = policy[policy["arm"] == START].sort_values("maze_seed")[PROGRESS].to_numpy()
    start_kl = kl[kl["arm"] == START]
    sets = list(dict.fromkeys(start_kl["set"]))
    out = {}
    for arm in ARMS:
        p, k = policy[policy["arm"] == arm], kl[kl["arm"] == arm]
        steps = sorted(set(p["step"]))
        if not steps:
            continue
        rewards = [start_r] + [p[p["step"] == s].sort_values("maze_seed")[PROGRESS].to_numpy() for s in steps]
        by_set = {}
        for name in sets:
            ids = start_kl.loc[start_kl["set"] == name, "id"].tolist()
            rows = [np.zeros(len(ids))]
            for s in steps:
                ks = k[(k["step"] == s) & (k["set"] == name)].set_index("id")["kl"]
                rows.append(ks.loc[ids].to_numpy())
            by_set[name] = np.stack(rows)
        out[arm] = {"steps": np.array([0, *steps]), "rewards": np.stack(rewards), "kl": by_set}
    return out


def _curves(arrays: dict, maze_idx=None, prompt_idx=None) -> dict:
    """Per arm (progress [S], pooled off-target KL [S], maze KL [S]) for one resample of mazes and prompts."""
    out = {}
    for arm, a in arrays.items():
        r = a["rewards"] if maze_idx is None else a["rewards"][:, maze_idx]
        progress = _progress(r)
        off = [m if prompt_idx is None else m[:, prompt_idx[name]] for name, m in a["kl"].items() if name != ON_TARGET]
        pooled = np.mean([m.mean(1) for m in off], axis=0)
        maze = a["kl"][ON_TARGET].mean(1) if ON_TARGET in a["kl"] else np.full(len(progress), np.nan)
        out[arm] = (progress, pooled, maze)
    return out


def _progress(rewards: np.ndarray) -> np.ndarray:
    """Mean reward per checkpoint minus the start's: exactly 0 at the start (one reduction for every row, so rounding
    cannot make the start look like progress)."""
    m = rewards.mean(1)
    return m - m[0]


def at_progress(progress: np.ndarray, values: np.ndarray, level: float) -> float:
    """`values` linearly interpolated where `progress` first reaches `level` (NaN if it never does).

    progress[0] is the start (0); between checkpoints both are taken as linear in training.
    """
    hit = np.flatnonzero(progress >= level)
    if hit.size == 0:
        return float("nan")
    i = int(hit[0])
    if i == 0:
        return float(values[0])
    span = progress[i] - progress[i - 1]
    w = (level - progress[i - 1]) / span if span > 0 else 1.0
    return float(values[i - 1] + w * (values[i] - values[i - 1]))


def _matched(curves: dict) -> tuple[float, dict]:
    """(matched progress level, {arm: pooled off-target KL there}); level NaN when an arm never improves."""
    level = min(float(c[0].max()) for c in curves.values())
    if not level > 0:
        return float("nan"), {arm: float("nan") for arm in curves}
    return level, {arm: at_progress(c[0], c[1], level) for arm, c in curves.items()}


def matched_summary(policy: pd.DataFrame, kl: pd.DataFrame, decisions: int, n_boot: int = 2000, seed: int = 0) -> dict:
    """The H1m ratio with its CI, the matched level, and each arm's curve and final checkpoint.

    `policy`: rows arm, step, maze_seed, expected_value (arm "start" at step 0 once);
    `kl`: rows arm, step, set, id, kl in the same way. `decisions`: moves trained on per step.
    """
    arrays = _arrays(policy, kl)
    if set(arrays) != set(ARMS):
        raise ValueError(f"the matched comparison needs checkpoints of both arms, got {sorted(arrays)}")
    curves = _curves(arrays)
    level, at = _matched(curves)
    ratio = at["sft"] / at["rl"] if at["rl"] > 0 else float("nan")
    rng = np.random.default_rng(seed)
    n_mazes = arrays["rl"]["rewards"].shape[1]
    sizes = {name: m.shape[1] for name, m in arrays["rl"]["kl"].items()}
    boots = np.full(n_boot, np.nan)
    for b in range(n_boot):
        maze_idx = rng.integers(0, n_mazes, n_mazes)
        prompt_idx = {name: rng.integers(0, n, n) for name, n in sizes.items()}
        _, at_b = _matched(_curves(arrays, maze_idx, prompt_idx))
        with np.errstate(divide="ignore", invalid="ignore"):
            boots[b] = at_b["sft"] / at_b["rl"] if at_b["rl"] > 0 else np.nan
    lo, hi = percentile_ci(boots, 0.95)
    arms = {}
    for arm, (progress, pooled, maze) in curves.items():
        steps = arrays[arm]["steps"]
        arms[arm] = {"steps": steps.tolist(), "decisions": (steps * decisions).tolist(), "progress": progress.tolist(),
                     "off_target_kl": pooled.tolist(), "maze_kl": maze.tolist(), "off_target_kl_at_match": at[arm],
                     "final_progress": float(progress[-1]), "final_off_target_kl": float(pooled[-1])}
    return {
        "kl_direction": "KL(start || checkpoint), nats, full vocabulary, temperature 1; off target: equal-weight mean of the set means",
        "progress": "the first move's expected episode value on held-out mazes (best total tile reward over the episode "
                    "starting with the chosen direction, wind ignored) minus the start model's (exact policy, no sampling)",
        "start_expected_value": float(arrays["rl"]["rewards"][0].mean()),
        "decisions_per_step": decisions,
        "matched_progress": level,
        "sft_to_rl_off_target_kl": {"value": float(ratio), "ci_lo": lo, "ci_hi": hi, "n_boot": n_boot,
                                    "n_valid_boot": int(np.isfinite(boots).sum()), "n_mazes": n_mazes, "n_prompts": sizes},
        "arms": arms,
        **({} if np.isfinite(level) else {"note": "an arm never rose above the start's first-move value at any checkpoint: "
                                                  "there is no matched progress level (train longer: --steps)"}),
    }


def maze_draws(n_mazes: int, n_boot: int, seed: int) -> np.ndarray:
    """[n_boot, n_mazes] held-out maze resamples, one row per bootstrap draw (the same rows for every read-out)."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, n_mazes, n_mazes) for _ in range(n_boot)])


def arms_learned(rewards: dict[str, np.ndarray], draws: np.ndarray) -> dict:
    """Per arm: progress at its last checkpoint with a CI over the maze draws; `learned` when the CI lies above 0 (the
    protocol's learning gate: an arm that did not measurably improve the task cannot be compared per unit of it)."""
    out = {}
    for arm, r in rewards.items():
        diff = r[-1] - r[0]
        lo, hi = percentile_ci(diff[draws].mean(1), 0.95)
        out[arm] = {"progress": float(diff.mean()), "ci_lo": lo, "ci_hi": hi, "learned": bool(lo > 0)}
    return out


def statistic_contrast(rewards: dict[str, np.ndarray], stats: dict[str, np.ndarray], draws: np.ndarray,
                       stat_draws: dict[str, np.ndarray] | None = None) -> dict:
    """RL's change of a claim's statistic minus SFT's, per unit of task progress, at the largest progress both arms reach.

    `rewards`: per arm [S, mazes] first-move expected values (row 0: the shared start model); `stats`: per arm [S], the
    statistic at the same checkpoints (row 0: the start's). Each arm's change is its statistic interpolated where its
    progress first reaches the matched level, minus the start's, divided by that level. The CI's b-th draw takes maze
    resample `draws[b]` (the same for both arms: paired, so the matched level moves with the draw) and, when given,
    `stat_draws[arm][b]` [S]: the statistic recomputed on the b-th resample of the extraction's trajectories (the same
    trajectories at every checkpoint of both arms). Not measured when an arm did not learn (`arms_learned`), when the
    data have no matched level, or when too few draws do (the protocol's `title` rules)."""
    from probes.protocol import PROTOCOL

    def contrast(idx, per_arm) -> tuple[float, dict]:
        curves = {a: (_progress(r if idx is None else r[:, idx]), np.asarray(per_arm[a], float)) for a, r in rewards.items()}
        level = min(float(c[0].max()) for c in curves.values())
        if not level > 0:
            return float("nan"), {}
        per = {a: (at_progress(c[0], c[1], level) - c[1][0]) / level for a, c in curves.items()}
        return per["rl"] - per["sft"], {"level": level, **{f"{a}_change_per_progress": v for a, v in per.items()}}

    value, parts = contrast(None, stats)
    boots = np.array([contrast(idx, stats if stat_draws is None else {a: d[b] for a, d in stat_draws.items()})[0]
                      for b, idx in enumerate(draws)])
    lo, hi = percentile_ci(boots, 0.95)
    n_valid = int(np.isfinite(boots).sum())
    learned = arms_learned(rewards, draws)
    gate = PROTOCOL.title.learning_gate and not all(a["learned"] for a in learned.values())
    if gate or not np.isfinite(value) or n_valid < PROTOCOL.title.min_valid_boot * len(draws):
        lo = hi = float("nan")  # an arm did not learn, or no matched level on the data or in too many draws: H5m not measured
    verdict = ("not measured" if not np.isfinite(lo) else "RL moves it more" if lo > 0 else "RL moves it less" if hi < 0
               else "no difference detected")
    return {"value": value, "ci_lo": lo, "ci_hi": hi, "n_boot": len(draws), "n_valid_boot": n_valid, "verdict": verdict,
            "arms_learned": learned, "resampled": "held-out mazes" + (" and extraction trajectories" if stat_draws else ""), **parts}


def recruitment_against_nulls(delta: np.ndarray, reference: np.ndarray, null_dirs: dict[str, np.ndarray]) -> dict:
    """cos(an arm's change of the welfare axis, a reference direction), mean over the band layers the change moved, against
    null directions read on the same layers.

    `delta`, `reference`: [L_band, H]; `null_dirs`: {family: [draws, L_band, H]} (steering.axis_claim.null_directions).
    Per family, p = the share of null directions at least as aligned with the reference (one-sided, +1 smoothing)."""
    moved = np.linalg.norm(delta, axis=-1) > 0  # LoRA on the top k blocks leaves the layers below it unchanged

    def mean_cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        num = (a * b).sum(-1)
        den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
        return (num / np.where(den > 0, den, 1.0))[..., moved].mean(-1)

    if not moved.any():
        return {"cos": float("nan"), "layers_moved": 0, "nulls": {}}
    observed = float(mean_cos(delta, reference))
    out = {"cos": observed, "layers_moved": int(moved.sum()), "nulls": {}}
    for name, d in null_dirs.items():
        null = mean_cos(d, reference[None])
        out["nulls"][name] = {"p": float((1 + (null >= observed).sum()) / (1 + len(null))), "q95": float(np.percentile(null, 95)),
                              "draws": int(len(null))}
    return out


def _checkpoint_vectors(model, tokenizer, n: int, base, out_dir: Path, batch_size: int):
    """The checkpoint's concept vectors, extracted into out_dir (with per-example activations) or read back from it
    when an earlier read of the same checkpoint, trajectories and seed finished there."""
    from probes.extract import ExtractConfig, extract_vectors
    from probes.vectors import ConceptVectors
    from training.models import model_info

    def identity(config: dict, model_dict: dict, maze: dict) -> tuple:
        return ({k: v for k, v in config.items() if k != "batch_size"}, {k: model_dict.get(k) for k in ("path", "adapter")}, maze)

    want = identity(ExtractConfig(n_per_class=n, seed=base.seed, max_moves=1).__dict__, model_info(model).to_dict(), base.maze.to_dict())
    if (out_dir / "vectors.safetensors").exists():
        cached = ConceptVectors.load(out_dir)
        if identity(cached.meta.get("config", {}), cached.meta.get("model", {}), cached.meta.get("maze_config")) == want:
            return cached
    return extract_vectors(model, tokenizer, n, seed=base.seed, maze_config=base.maze, batch_size=batch_size, max_moves=1,
                           out_dir=out_dir, progress=False)


def _class_counts(labels: np.ndarray, n_boot: int, seed: int) -> dict[str, np.ndarray]:
    """{class: [n_boot, n_class] multiplicities}: the extraction's trajectories resampled within class, one row per draw."""
    from envs import TILE_KINDS

    rng = np.random.default_rng([seed, 1])
    out = {}
    for k in TILE_KINDS:
        n = int((labels == k).sum())
        out[k] = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(n_boot)]).astype(np.float32)
    return out


def _resampled_axes(acts: np.ndarray, labels: np.ndarray, counts: dict[str, np.ndarray], band: list[int]) -> dict[str, np.ndarray]:
    """{"mold", "gold": [n_boot, L_band, H] unit concept vectors} of one checkpoint under every trajectory draw (v_k: mean of
    class k minus the mean of the other classes, as probes.metrics.vectors_from_sums)."""
    from probes import nulls

    sums, sizes = {}, {}
    for k, c in counts.items():
        a = np.asarray(acts[labels == k][:, band, :], dtype=np.float32)
        sums[k], sizes[k] = (c @ a.reshape(len(a), -1)).reshape(len(c), len(band), -1), len(a)
    total, n_total = sum(sums.values()), sum(sizes.values())
    return {k: nulls.unit(sums[k] / sizes[k] - (total - sums[k]) / (n_total - sizes[k])) for k in ("mold", "gold")}


def _axis_statistics(mold: np.ndarray, gold: np.ndarray, start_axis: np.ndarray) -> dict[str, np.ndarray]:
    """Per draw (leading axis): the antiparallelism -min over the band of cos(v_Mold, v_Gold), and the welfare axis's mean
    cosine over the band with the start model's (unit vectors in, [..., L_band, H])."""
    axis = _unit_axis({"gold": gold, "mold": mold})
    return {"antiparallelism": -(mold * gold).sum(-1).min(-1), "alignment_with_start_axis": (axis * start_axis).sum(-1).mean(-1)}


def extraction_draws(dirs: dict[tuple[str, int], Path], band: list[int], n_boot: int, seed: int) -> dict[str, dict[str, np.ndarray]]:
    """{statistic: {arm: [n_boot, S]}}: the axis statistics of every checkpoint (start first) recomputed on `n_boot` resamples of
    the extraction's trajectories, the same draw for every checkpoint (they all read the same trajectories)."""
    from probes.extract import load_examples

    examples, _ = load_examples(dirs[(START, 0)])
    labels = examples["kind"].to_numpy()
    counts = _class_counts(labels, n_boot, seed)

    def read(key) -> dict[str, np.ndarray]:
        ex, acts = load_examples(dirs[key])
        if not np.array_equal(ex["kind"].to_numpy(), labels):
            raise ValueError(f"{dirs[key]} read other trajectories than the start's; delete the vectors folder and read again")
        return _resampled_axes(acts, labels, counts, band)

    start = read((START, 0))
    start_axis = _unit_axis(start)
    out: dict[str, dict[str, list]] = {}
    for arm in ARMS:
        steps = sorted(s for a, s in dirs if a == arm)
        per_step = [_axis_statistics(**start, start_axis=start_axis)] + [_axis_statistics(**read((arm, s)), start_axis=start_axis)
                                                                         for s in steps]
        for name in per_step[0]:
            out.setdefault(name, {})[arm] = np.stack([p[name] for p in per_step], axis=1)
    return out


def _unit_axis(vectors: dict[str, np.ndarray]) -> np.ndarray:
    """unit(v_Gold - v_Mold) per band layer (unit concept vectors in)."""
    from probes import nulls

    return nulls.unit(vectors["gold"] - vectors["mold"])


def axis_contrast(arrays: dict, vectors: dict, start_model, tokenizer, vectors_root: Path, n_boot: int, seed: int) -> dict:
    """RL vs SFT on the welfare axis: the contrast per unit of progress of claim 1's statistic (antiparallelism, -min over the
    band of cos(v_Mold, v_Gold); H5m) and of the axis's alignment with the start's, with CIs over held-out mazes and the
    extraction's trajectories; and each arm's final axis change recruited onto the start model's own axis u_* and its
    valence direction, against the null directions of claim 5."""
    from probes import nulls
    from probes.emotion import valence_directions
    from probes.extract import load_examples
    from probes.protocol import PROTOCOL
    from steering.axis_claim import null_directions, welfare_axis

    start_v = vectors[(START, 0)]
    band = PROTOCOL.band.layers(start_v.n_layers)

    def axis(cv) -> np.ndarray:
        return welfare_axis(cv, band)

    def unit_vectors(cv) -> dict[str, np.ndarray]:
        return {k: nulls.unit(np.stack([cv.get(k, l).double().numpy() for l in band])) for k in ("mold", "gold")}

    u = axis(start_v)
    series = {arm: [(0, start_v)] + sorted((s, v) for (a, s), v in vectors.items() if a == arm) for arm in ARMS}
    rewards = {arm: arrays[arm]["rewards"] for arm in ARMS}
    start_axis = _unit_axis(unit_vectors(start_v))
    points = {arm: [_axis_statistics(**unit_vectors(v), start_axis=start_axis) for _, v in series[arm]] for arm in ARMS}
    stats = {name: {arm: np.array([float(p[name]) for p in points[arm]]) for arm in ARMS} for name in points["rl"][0]}
    draws = maze_draws(rewards["rl"].shape[1], n_boot, seed)
    stat_draws = extraction_draws({key: vectors_root / f"{key[0]}_{key[1]}" for key in vectors}, band, n_boot, seed)
    examples, acts = load_examples(vectors_root / f"{START}_0", (start_v.n_layers, start_v.hidden_size))
    null_dirs = null_directions(acts, examples, band, PROTOCOL.nulls.draws, seed)
    valence = valence_directions(start_model, tokenizer, band, "a")
    refs = {"start_axis_u": u, "valence": np.stack([valence[l] for l in band])}
    return {"band": [band[0], band[-1]],
            "contrast": {name: statistic_contrast(rewards, per_arm, draws, stat_draws[name]) for name, per_arm in stats.items()},
            "statistics": {name: {arm: v.tolist() for arm, v in per_arm.items()} for name, per_arm in stats.items()},
            "recruitment": {arm: {ref: recruitment_against_nulls(axis(series[arm][-1][1]) - u, r, null_dirs) for ref, r in refs.items()}
                            for arm in ARMS}}


def rl_update(start, rl_final, vectors: dict, config, n_boot: int, seed: int) -> dict:
    """H3, H4 and H4b read on the RL arm's own update (start -> its last checkpoint), not on a delta that is mostly SFT:
    {"anatomy": the update's anatomy, "recruitment": cos(v_k after RL, v_k of the start) per layer (with --extract)}."""
    from mechanics.anatomy import anatomy_summary, matrix_table, state_dict_float32
    from mechanics.recruitment import recruitment_summary, vector_cosines

    lora = config.finetune == "lora"
    table = matrix_table(state_dict_float32(start), state_dict_float32(rl_final))
    out = {"anatomy": {**anatomy_summary(table, low_rank_by_construction=lora, trainable_blocks=config.lora_top_layers if lora else None),
                       "delta": "the RL arm's own update: start model -> its last checkpoint"}}
    last = max((s for a, s in vectors if a == "rl"), default=None)
    if last is not None:
        names = ("mold", "gold")
        cos = vector_cosines({k: vectors[("rl", last)].get(k).numpy() for k in names}, {k: vectors[(START, 0)].get(k).numpy() for k in names})
        out["recruitment"] = {**recruitment_summary(cos, None, n_boot, seed), "vectors": f"RL arm step {last} against the start model"}
    return out


def progress_table(summary: dict) -> pd.DataFrame:
    """One row per arm and checkpoint (the start as step 0 of both): the README's table."""
    rows = []
    for arm, a in summary["arms"].items():
        for i, step in enumerate(a["steps"]):
            rows.append({"arm": arm, "step": step, "decisions": a["decisions"][i], "progress": a["progress"][i],
                         "off_target_kl": a["off_target_kl"][i], "maze_kl": a["maze_kl"][i]})
    return pd.DataFrame(rows)


def plot(summary: dict, path: Path) -> None:
    """Off-target drift against on-target progress (the comparison), and progress against decisions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2))
    for arm, colour in zip(ARMS, ("tab:blue", "tab:orange")):
        a = summary["arms"][arm]
        ax.plot(a["progress"], a["off_target_kl"], "o-", color=colour, label=arm.upper())
        for x, y, s in zip(a["progress"], a["off_target_kl"], a["steps"]):
            ax.annotate(str(s), (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7, color=colour)
        bx.plot(a["decisions"], a["progress"], "o-", color=colour, label=arm.upper())
    level, r = summary["matched_progress"], summary["sft_to_rl_off_target_kl"]
    if np.isfinite(level):
        ax.axvline(level, color="grey", ls="--", lw=1)
        ax.set_title(f"at matched progress {level:+.2f}: SFT/RL off-target KL {r['value']:.2f} [{r['ci_lo']:.2f}, {r['ci_hi']:.2f}]",
                     fontsize=9)
    ax.set_xlabel("on-target progress (first-move episode value - start's)")
    ax.set_ylabel("off-target KL(start || checkpoint), nats")
    ax.legend()
    bx.set_xlabel("decisions trained on")
    bx.set_ylabel("on-target progress")
    bx.axhline(0, color="grey", lw=0.8)
    bx.legend()
    fig.tight_layout()
    atomic_write_png(path, fig, dpi=120)
    plt.close(fig)


def run_matched(base, start_model: str, out_dir, n_eval_mazes: int = 64, n_maze: int = 16, n_per_set: int = 16,
                batch_size: int = 8, n_boot: int = 2000, progress: bool = True, extract_n: int = 0) -> tuple[dict, dict[str, pd.DataFrame]]:
    """Train both arms into out_dir/train_{rl,sft} (resuming what is there) and read every checkpoint.

    `base`: the TrainConfig both arms share (its model is replaced by `start_model`, a whole model:
    a built-in name, a folder, or a full fine-tune's checkpoint folder). `extract_n` > 0: concept vectors
    of every checkpoint from that many trajectories per class, for the claim-statistic contrast and the
    recruitment of each arm's axis change (`axis_contrast`). Returns (summary, tables).
    """
    from tqdm import tqdm

    from mechanics.examples import example_sets
    from training.evaluate import heldout_maze_seeds
    from training.models import load_model
    from training.rl import train_rl
    from training.sft import train_sft

    out_dir = Path(out_dir)
    configs = arm_configs(base, start_model)
    for arm, config in configs.items():
        run_dir = out_dir / f"train_{arm}"
        (train_rl if arm == "rl" else train_sft)(config, run_dir, resume=(run_dir / "config.json").exists(), progress=progress)
    start, tok = load_model(start_model, device=base.device, dtype="float32")
    sets = example_sets(tok, n_maze, n_per_set, base.seed, base.maze, base.maze.n_moves)
    maze_seeds = heldout_maze_seeds(n_eval_mazes, base.seed)
    todo = [(START, 0, None)] + [(arm, step, folder) for arm in ARMS for step, folder in checkpoint_models(out_dir / f"train_{arm}")]
    policies, kls, vectors = [], [], {}
    for arm, step, folder in tqdm(todo, desc="read checkpoints", disable=not progress, dynamic_ncols=True):
        model = start if folder is None else load_model(start_model, device=base.device, dtype="float32", checkpoint=folder)[0]
        policy, kl = read_checkpoint(start, model, tok, sets, base.maze, maze_seeds, base.temperature, batch_size)
        policies.append(policy.assign(arm=arm, step=step))
        kls.append(kl.assign(arm=arm, step=step))
        if extract_n:
            vectors[(arm, step)] = _checkpoint_vectors(model, tok, extract_n, base, out_dir / "vectors" / f"{arm}_{step}", batch_size)
        del model
    policy, kl = pd.concat(policies, ignore_index=True), pd.concat(kls, ignore_index=True)
    summary = matched_summary(policy, kl, decisions_per_step(configs["rl"]), n_boot, base.seed)
    rl_final = checkpoint_models(out_dir / "train_rl")[-1][1]
    summary["rl_update"] = rl_update(start, load_model(start_model, device=base.device, dtype="float32", checkpoint=rl_final)[0], vectors,
                                     configs["rl"], n_boot, base.seed)
    if extract_n:
        summary["axis_contrast"] = axis_contrast(_arrays(policy, kl), vectors, start, tok, out_dir / "vectors", n_boot, base.seed)
    summary["arms_share"] = ("start model, fine-tuning mode and LoRA placement, optimizer, learning rate and cosine schedule, "
                             "steps, seed and decisions per step; they differ in whose moves are trained on (RL: its own "
                             "samples weighted by advantage, with the entropy bonus; SFT: the scripted good policy's)")
    summary["start_model"] = str(start_model)
    from probes.protocol import PROTOCOL

    summary["protocol"] = PROTOCOL.stamp()  # the title question's rules (TitleQuestion) decide H5m
    summary["status"] = PROTOCOL.status(base.seed, part="title")
    return summary, {"matched": progress_table(summary), "matched_policy": policy, "matched_kl": kl}
