"""One-step probe (H1, and the gradients H2 reads): one RL and one SFT update from the same model.

Per batch: the model plays `n_mazes` x `group_size` episodes of its own (masked sampling at the
training temperature) and gets Dr. GRPO advantages; the SFT batch is the same episodes, so the
same maze states, labelled with the scripted good policy's move at each state (replayed from
the recorded seeds). Each gives an ascent direction g (full parameters, float32; the RL loss is
training's policy_loss without the entropy bonus, the SFT loss training's sft_loss).

Each step theta + eta g is scaled to the same on-target rise `delta` (nats) of a log-probability
target: eta = delta / <grad target, g> to first order, then `refine` secant corrections on the
measured change (`weighted_logp`). Two currencies (`match`):
* "own" (default): each step's own target, SFT the mean log-probability of the scripted moves
  (temperature 1), RL the advantage-weighted log-probability of its sampled moves (training
  temperature, per unit of |advantage|). Both steps always rise to first order;
* "scripted": both scaled to the same rise of the scripted moves' log-probability, a common
  currency in which SFT is the steepest ascent (the shortest step), so SFT moving the
  off-target distributions more would not be for lack of a longer step. On the naive default
  model the RL step's first-order change of it was negative on a measured batch (no RL row then).
A step whose direction does not rise to first order, or that misses delta by more than
MATCH_TOLERANCE, gets no KL (NaN; the batch drops out of H1's paired ratio). A batch in which
every group's episodes have equal returns has no advantage at all: its RL objective is zero, there is
no RL step to take and no RL target to raise, so its RL row is not measured (`rl_signal` False, every
number NaN, no RL gating rows) and the batch drops out of H1 and H2 alike. The off-target
effect is KL(theta || theta + eta g) on each set (mechanics/drift.py). Only summed gradients
are kept (no per-example gradients): the two directions and the parameters' copy for exact restores.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager

import numpy as np
import pandas as pd
import torch

from core.stats import mean_ci, ratio_of_means_ci
from envs import MazeConfig, MazeEnv
from envs.scripted import good_policy_action
from mechanics.drift import kl_table
from mechanics.examples import ON_TARGET, Example
from mechanics.gating import GateRecorder
from training.forward import direction_logprobs
from training.losses import policy_loss
from training.models import pad_token_id
from training.rl import compute_advantages, episode_tensors
from training.rollout import ChatTokens, EpisodeRecord, rollout
from training.seeds import PROBE_STREAM, step_seeds
from training.sft import sft_loss

KINDS = ("rl", "sft")
MATCHES = ("own", "scripted")
MATCH_TOLERANCE = 0.25  # off-target KL grows ~ quadratically with the step: 25% off in the change is ~50% in KL


def scripted_labels(episodes: list[EpisodeRecord], maze_config: MazeConfig, depth: int = 3, seed: int = 0) -> torch.Tensor:
    """[n_episodes, n_moves] the scripted good policy's move at each state the episodes visited.

    Each episode is replayed from its maze and wind seeds with its own actions; the replayed
    neighbours must equal the recorded ones (else the states would not be the same).
    """
    out = []
    for ep in episodes:
        env = MazeEnv(maze_config)
        env.reset(seed=ep.env_seed, options={"maze_seed": ep.maze_seed})
        rng = np.random.default_rng([seed, ep.maze_seed, ep.env_seed])
        labels = []
        for t, a in enumerate(ep.actions):
            if tuple(env.neighbour_tiles()) != tuple(ep.neighbours[t]):
                raise RuntimeError(f"replaying maze {ep.maze_seed} diverged at move {t}; the episode's seeds do not reproduce it")
            labels.append(good_policy_action(env, rng, depth))
            env.step(a)
        out.append(labels)
    return torch.tensor(out, dtype=torch.long)


def flat_grad(params: list[torch.nn.Parameter]) -> torch.Tensor:
    """[n_params] float32: the parameters' .grad concatenated (zeros where a parameter got none)."""
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).detach().float().reshape(-1) for p in params])


@contextmanager
def shifted(params: list[torch.nn.Parameter], direction: torch.Tensor, eta: float):
    """Temporarily theta <- theta + eta * direction; restored exactly (from a copy) afterwards."""
    saved = [p.detach().clone() for p in params]
    offset = 0
    with torch.no_grad():
        for p in params:
            n = p.numel()
            p.add_(direction[offset : offset + n].view_as(p).to(p.dtype), alpha=eta)
            offset += n
    try:
        yield
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s)


def _ascent(model, params, loss_fn, episodes: list[EpisodeRecord], micro_batch: int) -> torch.Tensor:
    """-grad of sum over micro-batches of loss_fn(micro-batch indices) (an ascent direction)."""
    for p in params:
        p.grad = None
    for lo in range(0, len(episodes), micro_batch):
        loss_fn(slice(lo, min(lo + micro_batch, len(episodes)))).backward()
    g = -flat_grad(params)
    for p in params:
        p.grad = None
    return g


def rl_direction(model, params, episodes, dir_ids, group_size: int, temperature: float, pad_id: int, micro_batch: int = 8, algo: str = "dr_grpo") -> torch.Tensor:
    """Ascent direction of training's RL objective on these episodes (entropy bonus off: the probe isolates reinforcement)."""
    t = episode_tensors(episodes, group_size)
    adv = compute_advantages(algo, t)
    norm = float(t["actions"].numel())

    def loss(idx):
        logp4 = direction_logprobs(model, episodes[idx], dir_ids, temperature, 0, pad_id)
        return policy_loss(logp4, t["actions"][idx], t["old_logp"][idx], adv[idx], t["neighbours"][idx], algo=algo, norm=norm, beta=0.0)[0]

    return _ascent(model, params, loss, episodes, micro_batch)


def sft_direction(model, params, episodes, labels: torch.Tensor, dir_ids, pad_id: int, micro_batch: int = 8) -> torch.Tensor:
    """Ascent direction of training's SFT objective (= grad of T, the mean log-prob of the labels)."""
    norm = float(labels.numel())
    return _ascent(model, params, lambda idx: sft_loss(direction_logprobs(model, episodes[idx], dir_ids, 1.0, 0, pad_id), labels[idx], norm),
                   episodes, micro_batch)


@torch.no_grad()
def weighted_logp(model, episodes, actions: torch.Tensor, weights: torch.Tensor, temperature: float, dir_ids, pad_id: int, micro_batch: int = 8) -> float:
    """sum w * log pi_temperature(action) / sum |w| over the episodes' states ([n_episodes, n_moves] actions and weights).

    With w = 1, the labels and temperature 1: T, the mean log-probability of the scripted moves.
    With w = the advantages, the episodes' own actions and the training temperature: the RL step's
    own target (its surrogate at ratio 1, in nats per unit of |advantage|). NaN when every weight
    is zero (a batch without advantage has no RL target), never a division by zero.
    """
    mass = float(weights.abs().sum())
    if not mass > 0:
        return float("nan")  # no weight anywhere (all advantages zero): no target to measure
    total = 0.0
    for lo in range(0, len(episodes), micro_batch):
        idx = slice(lo, min(lo + micro_batch, len(episodes)))
        logp4 = direction_logprobs(model, episodes[idx], dir_ids, temperature, 0, pad_id)
        a, w = actions[idx].to(logp4.device), weights[idx].to(logp4.device)
        total += float((logp4.gather(-1, a.unsqueeze(-1)).squeeze(-1) * w).sum())
    return total / mass


def move_advantages(t: dict[str, torch.Tensor]) -> tuple[torch.Tensor, float]:
    """([n_episodes, n_moves] each move's Dr. GRPO advantage, the mean |advantage| over the moves).

    `t` is `episode_tensors`' output. The RL step's own target is the advantage-weighted
    log-probability per unit of |advantage|; the gradient of that target is the RL direction
    divided by the mean |advantage|. The mean is 0 exactly when each group's episodes have equal
    returns: the batch carries no RL signal, and the caller must not divide by it.
    """
    adv = compute_advantages("dr_grpo", t).unsqueeze(-1).expand_as(t["actions"])
    return adv, float(adv.abs().sum()) / adv.numel() if adv.numel() else 0.0


def matched_eta(eta0: float, delta: float, measure, refine: int = 1) -> tuple[float, float]:
    """(eta, achieved change): the first-order step eta0 and up to `refine` secant corrections, keeping
    whichever measured change came closest to `delta`.

    `measure(eta)` returns the actual on-target change at step size eta. A correction is tried
    only from a change of the predicted sign; keeping the closest guards against a secant
    step that overshoots where the objective is far from linear.
    """
    if not np.isfinite(eta0) or eta0 <= 0:
        return float("nan"), float("nan")
    tried = [(eta0, measure(eta0))]
    for _ in range(refine):
        eta, achieved = tried[-1]
        if not achieved > 0:
            break
        eta = eta * delta / achieved
        tried.append((eta, measure(eta)))
    eta, achieved = min(tried, key=lambda t: abs(t[1] - delta) if np.isfinite(t[1]) else np.inf)
    return float(eta), float(achieved)


def is_matched(achieved: float, delta: float, tolerance: float = MATCH_TOLERANCE) -> bool:
    """The step reached the common on-target change within `tolerance` (relative): only then is its KL compared."""
    return bool(np.isfinite(achieved) and abs(achieved / delta - 1.0) <= tolerance)


def probe_batch(model, ref_model, params, tokenizer, chat: ChatTokens, maze_config: MazeConfig, sets: dict[str, list[Example]],
                maze_seeds: list[int], group_size: int, temperature: float, rollout_seed: int, delta: float, refine: int = 1,
                micro_batch: int = 8, batch_size: int = 8, label_seed: int = 0, match: str = "own") -> tuple[list[dict], list[dict]]:
    """(step rows, gating rows) for one batch: per kind the matched step and the KL it causes, per layer the gate shares.

    Without advantage (`move_advantages`' mean 0) the RL step is not taken: its row has
    `rl_signal` False and NaN for every measured number, and it has no gating rows.
    """
    pad_id = pad_token_id(tokenizer)
    model.eval()
    episodes = rollout(model, tokenizer, maze_config, maze_seeds, group_size, temperature, seed=rollout_seed, chat=chat)
    labels = scripted_labels(episodes, maze_config, seed=label_seed)
    t = episode_tensors(episodes, group_size)
    adv, mean_abs_adv = move_advantages(t)
    rl_signal = mean_abs_adv > 0
    kinds = KINDS if rl_signal else tuple(k for k in KINDS if k != "rl")
    ones = torch.ones(labels.shape)
    # Each kind's target: (actions, weights, temperature); the gradient of T_scripted is the SFT direction
    # exactly, and that of the RL step's own target is its direction times norm / sum |A| (only with RL signal: sum |A| > 0).
    scripted = (labels, ones, 1.0)
    targets = {"sft": scripted, "rl": scripted if match == "scripted" else (t["actions"], adv, temperature)}
    directions, gating = {}, []
    for kind in kinds:
        with GateRecorder(model) as rec:
            if kind == "rl":
                directions[kind] = rl_direction(model, params, episodes, chat.dir_ids, group_size, temperature, pad_id, micro_batch)
            else:
                directions[kind] = sft_direction(model, params, episodes, labels, chat.dir_ids, pad_id, micro_batch)
        shares = rec.shares()
        for layer in range(len(rec.mlps)):
            gating.append({"kind": kind, "layer": layer, **{k: float(v[layer]) for k, v in rec.sums.items()},
                           **{k: float(v[layer]) for k, v in shares.items()}})
    grad_target = {"sft": directions["sft"]}
    if rl_signal:
        grad_target["rl"] = directions["sft"] if match == "scripted" else directions["rl"] * (adv.numel() / float(adv.abs().sum()))
    shared = {"rl_signal": rl_signal, "mean_abs_advantage": mean_abs_adv, "mean_return": float(np.mean([ep.total_reward for ep in episodes])),
              "label_agreement": float((labels == torch.tensor([ep.actions for ep in episodes])).float().mean())}
    nan = float("nan")
    rows = []
    for kind in KINDS:
        row = {"kind": kind, "match": match, "dot_grad_target": nan, "grad_norm": nan, "eta": nan, "target_change": nan, "matched": False,
               "step_norm": nan, **shared, **{f"kl_{name}": nan for name in [*sets, "off"]}}
        rows.append(row)
        if kind not in directions:
            continue  # no RL signal in this batch: not measured
        g = directions[kind]
        acts, weights, temp = targets[kind]
        base = weighted_logp(model, episodes, acts, weights, temp, chat.dir_ids, pad_id, micro_batch)
        dot = float(grad_target[kind].double() @ g.double())

        def measure(eta, g=g, acts=acts, weights=weights, temp=temp, base=base):
            with shifted(params, g, eta):
                return weighted_logp(model, episodes, acts, weights, temp, chat.dir_ids, pad_id, micro_batch) - base

        eta, achieved = matched_eta(delta / dot if dot > 0 else nan, delta, measure, refine)
        matched = is_matched(achieved, delta)
        row.update({"dot_grad_target": dot, "grad_norm": float(g.norm()), "eta": eta, "target_change": achieved, "matched": matched,
                    "step_norm": eta * float(g.norm()) if np.isfinite(eta) else nan})
        if matched:
            with shifted(params, g, eta):
                table = kl_table(ref_model, model, sets, pad_id, batch_size)
            means = table.groupby("set")["kl"].mean()
            row.update({f"kl_{name}": float(means[name]) for name in sets})
            off = [means[name] for name in sets if name != ON_TARGET]
            row["kl_off"] = float(np.mean(off)) if off else nan
    return rows, gating


def one_step_probe(model, tokenizer, sets: dict[str, list[Example]], maze_config: MazeConfig | None = None, n_batches: int = 4,
                   n_mazes: int = 2, group_size: int = 4, n_moves: int = 3, temperature: float = 0.7, delta: float = 0.02,
                   refine: int = 1, seed: int = 0, micro_batch: int = 8, batch_size: int = 8, progress: bool = False,
                   match: str = "own") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(step table, gating table) over `n_batches` batches; the model is left as it was (float32, every parameter trained).

    `match`: "own" scales each step to the same rise of its own target's log-probability (SFT: the
    scripted moves; RL: its sampled moves weighted by advantage); "scripted" scales both to the same
    rise of the scripted moves' log-probability (a common currency, but one where the RL step may not
    rise at all: on the naive model its first-order change is often negative, and the batch has no RL row).
    """
    from tqdm.auto import tqdm

    if match not in MATCHES:
        raise ValueError(f"match must be one of {MATCHES}, got {match!r}")

    if next(model.parameters()).dtype != torch.float32:
        raise ValueError("the one-step probe works in float32; load the model with dtype float32")
    config = MazeConfig(**{**(maze_config or MazeConfig()).to_dict(), "n_moves": n_moves})
    chat = ChatTokens(tokenizer, config.letters)
    ref_model = copy.deepcopy(model).eval().requires_grad_(False)
    params = [p for p in model.parameters()]
    for p in params:
        p.requires_grad_(True)
    steps, gates = [], []
    for b in tqdm(range(n_batches), desc="one-step probe", disable=not progress):
        maze_seeds, rseed = step_seeds(seed, b, n_mazes, PROBE_STREAM)
        rows, gating = probe_batch(model, ref_model, params, tokenizer, chat, config, sets, maze_seeds, group_size, temperature,
                                   rseed, delta, refine, micro_batch, batch_size, label_seed=seed, match=match)
        steps += [{"batch": b, **r} for r in rows]
        gates += [{"batch": b, **r} for r in gating]
    return pd.DataFrame(steps), pd.DataFrame(gates)


def probe_summary(steps: pd.DataFrame, gates: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> dict:
    """H1's ratio (SFT over RL off-target KL at matched on-target change, paired over batches) and H2's gating ratios.

    Gating per batch and kind pools every layer (sums, then shares); its CIs resample batches.
    `rl_minus_sft_gating` is the paired difference of the RL and the SFT gating ratios.
    Batches without RL signal (all advantages zero) have NaN RL rows and no RL gating rows, so they
    drop out of every RL ratio; `n_no_rl_signal` counts them (when all batches are such, H1, H2 and H2b
    are not measured: their values and CIs are NaN); so are H2 and H2b for a family without gated MLPs.
    """
    from mechanics.gating import SUMS, gate_shares

    by = {k: steps[steps["kind"] == k].set_index("batch") for k in KINDS}
    common = by["rl"].index.intersection(by["sft"].index)
    kl = {k: by[k].reindex(common).get("kl_off", pd.Series(np.nan, index=common)).to_numpy(dtype=float) for k in KINDS}
    signal = by["rl"]["rl_signal"] if "rl_signal" in by["rl"] else pd.Series(True, index=by["rl"].index)
    out = {"n_batches": int(len(common)), "n_no_rl_signal": int((~signal.astype(bool)).sum()),
           "sft_to_rl_off_target_kl": ratio_of_means_ci(kl["sft"], kl["rl"], n_boot, seed, paired=True),
           "off_target_kl": {k: mean_ci(kl[k], n_boot, seed) for k in KINDS},
           "target_change": {k: mean_ci(by[k]["target_change"], n_boot, seed) for k in KINDS},
           "gating": {}}
    if "kind" not in gates:  # no gated MLPs in this family (mechanics.gating.mlp_parts): H2 is not measured
        gates = pd.DataFrame(columns=["batch", "kind", *SUMS])
    pooled = {}
    for kind in KINDS:
        g = gates[gates["kind"] == kind].groupby("batch")[list(SUMS)].sum()
        shares = gate_shares({k: g[k].to_numpy() for k in SUMS})
        pooled[kind] = pd.Series(shares["gating_ratio"], index=g.index)
        out["gating"][kind] = {name: mean_ci(shares[name], n_boot, seed) for name in ("gating_ratio", "slope_ratio", "unit_share", "mass_share")}
    both = pooled["rl"].index.intersection(pooled["sft"].index)
    out["rl_minus_sft_gating"] = mean_ci(pooled["rl"][both].to_numpy() - pooled["sft"][both].to_numpy(), n_boot, seed)
    return out
