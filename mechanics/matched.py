"""Matched RL vs SFT: one start model continued with RL and with SFT on
scripted trajectories, compared at matched on-target progress, not at matched steps.

The two arms share everything but whose tokens are trained on: the start model, the LoRA
placement and rank (or full fine-tune), the optimizer, the learning rate and its cosine schedule,
the number of steps and the decisions per step (SFT's batch is RL's mazes x group, of scripted
trajectories as long as RL's episodes). RL keeps its entropy bonus: that is how this toolkit
trains with RL. Every `checkpoint_every` steps both arms checkpoint, and each checkpoint is read for
* on-target progress: the exact first-move expected reward on held-out mazes
  (training.evaluate.first_move_policy, no sampling) minus the start model's;
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
MIN_VALID_BOOT = 0.95  # a contrast whose resamples find a matched level less often than this is not measured


def arm_configs(base, start_model: str) -> dict:
    """{"rl": TrainConfig, "sft": TrainConfig}: `base` (a TrainConfig) continued from `start_model`, SFT matched to RL."""
    rl = base.replace(model=str(start_model))
    sft = rl.replace(sft_steps=rl.n_steps, sft_batch=rl.n_episodes, sft_lr=rl.lr, sft_schedule="cosine", sft_finetune=rl.finetune,
                     sft_n_moves=rl.maze.n_moves, sft_checkpoint_every=rl.checkpoint_every)
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
    """(policy rows: maze_seed, expected_reward; kl rows: set, id, kl) of one model against `start`."""
    from mechanics.drift import kl_table
    from training.evaluate import first_move_policy
    from training.models import pad_token_id

    policy = first_move_policy(model, tokenizer, maze_config, maze_seeds, temperature)[["maze_seed", "expected_reward"]]
    if model is start:  # KL(start || start) = 0 exactly: no forward needed
        rows = [{"set": name, "id": e.id, "kl": 0.0} for name, ex in sets.items() for e in ex]
        return policy, pd.DataFrame(rows)
    return policy, kl_table(start, model, sets, pad_token_id(tokenizer), batch_size)[["set", "id", "kl"]]


def _arrays(policy: pd.DataFrame, kl: pd.DataFrame) -> dict:
    """Per arm: steps [S] (0 = the start model), rewards [S, mazes], kl by set [S, n_set], start row included."""
    start_r = policy[policy["arm"] == START].sort_values("maze_seed")["expected_reward"].to_numpy()
    start_kl = kl[kl["arm"] == START]
    sets = list(dict.fromkeys(start_kl["set"]))
    out = {}
    for arm in ARMS:
        p, k = policy[policy["arm"] == arm], kl[kl["arm"] == arm]
        steps = sorted(set(p["step"]))
        if not steps:
            continue
        rewards = [start_r] + [p[p["step"] == s].sort_values("maze_seed")["expected_reward"].to_numpy() for s in steps]
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

    `policy`: rows arm, step, maze_seed, expected_reward (arm "start" at step 0 once);
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
        "progress": "first-move expected reward on held-out mazes minus the start model's (exact policy, no sampling)",
        "start_expected_reward": float(arrays["rl"]["rewards"][0].mean()),
        "decisions_per_step": decisions,
        "matched_progress": level,
        "sft_to_rl_off_target_kl": {"value": float(ratio), "ci_lo": lo, "ci_hi": hi, "n_boot": n_boot,
                                    "n_valid_boot": int(np.isfinite(boots).sum()), "n_mazes": n_mazes, "n_prompts": sizes},
        "arms": arms,
        **({} if np.isfinite(level) else {"note": "an arm never rose above the start's first-move reward at any checkpoint: "
                                                  "there is no matched progress level (train longer: --steps)"}),
    }


def statistic_contrast(rewards: dict[str, np.ndarray], stats: dict[str, np.ndarray], n_boot: int = 2000, seed: int = 0) -> dict:
    """RL's change of a claim's statistic minus SFT's, per unit of task progress, at the largest progress both arms reach.

    `rewards`: per arm [S, mazes] first-move expected rewards (row 0: the shared start model); `stats`: per arm [S], the
    statistic at the same checkpoints (row 0: the start's). Each arm's change is its statistic interpolated where its
    progress first reaches the matched level, minus the start's, divided by that level. The CI resamples held-out mazes
    (the same draw for both arms: paired), so the matched level moves with the draw; the statistic's own sampling noise
    (its extraction) is not in it.
    """
    n_mazes = rewards["rl"].shape[1]

    def contrast(idx=None) -> tuple[float, dict]:
        curves = {a: (_progress(r if idx is None else r[:, idx]), np.asarray(stats[a], float)) for a, r in rewards.items()}
        level = min(float(c[0].max()) for c in curves.values())
        if not level > 0:
            return float("nan"), {}
        per = {a: (at_progress(c[0], c[1], level) - c[1][0]) / level for a, c in curves.items()}
        return per["rl"] - per["sft"], {"level": level, **{f"{a}_change_per_progress": v for a, v in per.items()}}

    value, parts = contrast()
    rng = np.random.default_rng(seed)
    boots = np.array([contrast(rng.integers(0, n_mazes, n_mazes))[0] for _ in range(n_boot)])
    lo, hi = percentile_ci(boots, 0.95)
    n_valid = int(np.isfinite(boots).sum())
    if not np.isfinite(value) or n_valid < MIN_VALID_BOOT * n_boot:
        lo = hi = float("nan")  # no matched level on the data, or in too many resamples: no CI (so H5m is not measured)
    verdict = ("not measured" if not np.isfinite(lo) else "RL moves it more" if lo > 0 else "RL moves it less" if hi < 0
               else "no difference detected")
    return {"value": value, "ci_lo": lo, "ci_hi": hi, "n_boot": n_boot, "n_valid_boot": n_valid, "verdict": verdict, **parts}


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
    from probes.extract import extract_vectors

    return extract_vectors(model, tokenizer, n, seed=base.seed, maze_config=base.maze, batch_size=batch_size, max_moves=1,
                           out_dir=out_dir, progress=False)


def axis_contrast(arrays: dict, vectors: dict, start_model, tokenizer, start_dir: Path, n_boot: int, seed: int) -> dict:
    """RL vs SFT on the welfare axis: the contrast per unit of progress of claim 1's statistic (antiparallelism, -min over the
    band of cos(v_Mold, v_Gold)) and of the axis's alignment with the start's, and each arm's final axis change recruited
    onto the start model's own axis u_* and its valence direction, against the null directions of claim 5."""
    from probes import nulls
    from probes.emotion import valence_directions
    from probes.extract import load_examples
    from probes.protocol import PROTOCOL
    from steering.axis_claim import null_directions, welfare_axis

    start_v = vectors[(START, 0)]
    band = PROTOCOL.band.layers(start_v.n_layers)

    def axis(cv) -> np.ndarray:
        return welfare_axis(cv, band)

    def antiparallel(cv) -> float:
        return -min(float(np.dot(nulls.unit(cv.get("mold", l).double().numpy()), nulls.unit(cv.get("gold", l).double().numpy())))
                    for l in band)

    u = axis(start_v)
    series = {arm: [(0, start_v)] + sorted((s, v) for (a, s), v in vectors.items() if a == arm) for arm in ARMS}
    rewards = {arm: arrays[arm]["rewards"] for arm in ARMS}
    stats = {"antiparallelism": {arm: np.array([antiparallel(v) for _, v in series[arm]]) for arm in ARMS},
             "alignment_with_start_axis": {arm: np.array([float(np.mean((nulls.unit(axis(v)) * nulls.unit(u)).sum(-1)))
                                                          for _, v in series[arm]]) for arm in ARMS}}
    examples, acts = load_examples(start_dir, (start_v.n_layers, start_v.hidden_size))
    null_dirs = null_directions(acts, examples, band, PROTOCOL.nulls.draws, seed)
    valence = valence_directions(start_model, tokenizer, band, "a")
    refs = {"start_axis_u": u, "valence": np.stack([valence[l] for l in band])}
    return {"band": [band[0], band[-1]],
            "contrast": {name: statistic_contrast(rewards, per_arm, n_boot, seed) for name, per_arm in stats.items()},
            "statistics": {name: {arm: v.tolist() for arm, v in per_arm.items()} for name, per_arm in stats.items()},
            "recruitment": {arm: {ref: recruitment_against_nulls(axis(series[arm][-1][1]) - u, r, null_dirs) for ref, r in refs.items()}
                            for arm in ARMS},
            "note": "contrast CIs resample held-out mazes (the matched level), not the extraction"}


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
    ax.set_xlabel("on-target progress (first-move expected reward - start's)")
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
    if extract_n:
        summary["axis_contrast"] = axis_contrast(_arrays(policy, kl), vectors, start, tok, out_dir / "vectors" / f"{START}_0", n_boot,
                                                 base.seed)
    summary["arms_share"] = ("start model, fine-tuning mode and LoRA placement, optimizer, learning rate and cosine schedule, "
                             "steps, seed and decisions per step; they differ in whose moves are trained on (RL: its own "
                             "samples weighted by advantage, with the entropy bonus; SFT: the scripted good policy's)")
    summary["start_model"] = str(start_model)
    return summary, {"matched": progress_table(summary), "matched_policy": policy, "matched_kl": kl}
