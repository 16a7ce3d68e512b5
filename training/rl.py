"""The RL training loop: Dr. GRPO (default), GRPO or token-level REINFORCE in the maze.

One step: roll out `mazes_per_step` groups of `group_size` episodes (a group shares a
maze), compute advantages, then `updates_per_step` optimizer updates over micro-batches
of episodes. The LR and the equalized-entropy coefficient beta follow the same cosine
from their peak to 0. Checkpoints every `checkpoint_every` steps hold the weights and
everything needed to resume bit-for-bit (optimizer, scheduler, RNG states, metrics);
a step's mazes and sampling seed are a pure function of (seed, step).
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from core.artifacts import atomic_write_parquet
from training.checkpoint import (TrainingDiverged, final_checkpoint, last_good_note, open_run_dir, resume_from_latest, save_checkpoint,
                                 write_run_config)
from training.config import TrainConfig
from training.forward import SPLIT_ATOL, direction_logprobs, first_trainable_block, split_forward_error
from training.losses import cosine_factor, dr_grpo_advantages, grpo_advantages, policy_loss, reinforce_advantages
from training.models import model_info, pad_token_id
from training.policy import build_policy, trainable_parameters
from training.rollout import ChatTokens, EpisodeRecord, rollout
from training.seeds import TRAIN_STREAM, step_seeds

NON_DETERMINISTIC_COLUMNS = ("wall_time", "step_time", "rollout_time", "update_time", "peak_rss_gib")


@dataclass
class DataParallel:
    """Data parallelism under `accelerate launch` / `torchrun` (WORLD_SIZE > 1); a no-op otherwise.

    Each process plays its share of the step's mazes (every group stays on one process),
    gradients are summed across processes (the loss is already divided by the global
    constant), metrics are summed, and only rank 0 writes files.
    """

    rank: int = 0
    world: int = 1

    @classmethod
    def from_env(cls, device: str) -> "DataParallel":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
        return cls(dist.get_rank(), world)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, items: list) -> list:
        if len(items) % self.world:
            raise ValueError(f"mazes_per_step ({len(items)}) must be divisible by the number of processes ({self.world})")
        return items[self.rank :: self.world]

    def sum(self, values: list[float]) -> list[float]:
        if self.world == 1:
            return values
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t)
        return t.tolist()

    def sum_grads(self, params) -> None:
        if self.world == 1:
            return
        import torch.distributed as dist

        for p in params:
            if p.grad is not None:
                dist.all_reduce(p.grad)

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()


def episode_tensors(episodes: list[EpisodeRecord], group_size: int) -> dict[str, torch.Tensor]:
    """Stack episode records into tensors; episodes must be ordered group by group."""
    n_groups = len(episodes) // group_size
    rewards = torch.tensor([ep.rewards for ep in episodes], dtype=torch.float32)
    return {
        "rewards": rewards.view(n_groups, group_size, -1),
        "returns": rewards.sum(-1).view(n_groups, group_size),
        "actions": torch.tensor([ep.actions for ep in episodes], dtype=torch.long),
        "old_logp": torch.tensor([ep.logprobs for ep in episodes], dtype=torch.float32),
        "neighbours": torch.tensor([ep.neighbours for ep in episodes], dtype=torch.long),
    }


def compute_advantages(algo: str, t: dict[str, torch.Tensor], gamma: float = 1.0) -> torch.Tensor:
    """[n_episodes] (dr_grpo, grpo) or [n_episodes, n_moves] (reinforce)."""
    if algo == "dr_grpo":
        return dr_grpo_advantages(t["returns"]).flatten()
    if algo == "grpo":
        return grpo_advantages(t["returns"]).flatten()
    if algo == "reinforce":
        adv = reinforce_advantages(t["rewards"], gamma)
        return adv.reshape(-1, adv.shape[-1])
    raise ValueError(f"unknown algo {algo!r}")


def _reference_logprobs(model, ref_model, episodes, dir_ids, temperature, start_block, pad_id):
    with torch.no_grad():
        if ref_model is not None:
            return direction_logprobs(ref_model, episodes, dir_ids, temperature, 0, pad_id)
        with model.disable_adapter():  # LoRA: the reference is the base model
            return direction_logprobs(model, episodes, dir_ids, temperature, start_block, pad_id)


def update(model, optimizer, episodes, t, advantages, config: TrainConfig, beta: float, dir_ids, start_block: int, pad_id: int, ref_model=None, step: int = 0, norm: float | None = None, dp: DataParallel | None = None) -> dict[str, float]:
    """`updates_per_step` optimizer updates on one rollout batch; returns the step's loss metrics.

    `norm` is the Dr. GRPO constant (default: loss_norm or n_episodes * n_moves of this batch).
    """
    dp = dp or DataParallel()
    params = trainable_parameters(model)
    n_eps, n_moves = t["actions"].shape
    norm = norm or config.loss_norm or float(n_eps * n_moves)
    out: dict[str, float] = {}
    for _ in range(config.updates_per_step):
        optimizer.zero_grad(set_to_none=True)
        total, bad, parts_sum = 0.0, 0.0, {}
        for lo in range(0, n_eps, config.micro_batch):
            idx = slice(lo, min(lo + config.micro_batch, n_eps))
            mb = episodes[idx]
            logp4 = direction_logprobs(model, mb, dir_ids, config.temperature, start_block, pad_id)
            ref = None
            if config.kl_coef > 0:
                ref = _reference_logprobs(model, ref_model, mb, dir_ids, config.temperature, start_block, pad_id)
            loss, parts = policy_loss(
                logp4, t["actions"][idx], t["old_logp"][idx], advantages[idx], t["neighbours"][idx],
                algo=config.algo, norm=norm, beta=beta, clip_eps=config.clip_eps, dual_clip=config.dual_clip,
                ref_logp4=ref, kl_coef=config.kl_coef,
            )
            if not torch.isfinite(loss):
                bad = 1.0  # decided after all processes agree, so none hangs in a collective
                continue
            loss.backward()
            total += float(loss.detach())
            for k, v in parts.items():
                parts_sum[k] = parts_sum.get(k, 0.0) + (v if k == "objective" else v * len(mb))
        keys = sorted(parts_sum)
        summed = dp.sum([bad, total, float(n_eps), *[parts_sum[k] for k in keys]])
        if summed[0] > 0:
            raise TrainingDiverged(f"non-finite loss at step {step}")
        dp.sum_grads(params)
        max_norm = config.max_grad_norm if config.max_grad_norm > 0 else float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
        if not np.isfinite(grad_norm):
            raise TrainingDiverged(f"non-finite gradient norm at step {step}")
        optimizer.step()
        n_total = summed[2]
        out = {"loss": summed[1], "grad_norm": grad_norm}
        out.update({k: (v if k == "objective" else v / n_total) for k, v in zip(keys, summed[3:])})
    return out


def train_rl(config: TrainConfig, run_dir: str | Path, resume: bool = False, progress: bool = True) -> Path:
    """Train with RL; returns the final checkpoint's model folder (see `final_checkpoint`)."""
    run_dir = Path(run_dir)
    config = open_run_dir(run_dir, config, resume, "rl")  # before any slow work
    dp = DataParallel.from_env(config.device)
    local = config
    if dp.world > 1 and config.device.startswith("cuda"):
        local = config.replace(device=f"cuda:{os.environ.get('LOCAL_RANK', dp.rank)}")
    model, tok = build_policy(local)
    chat = ChatTokens(tok, config.maze.letters)
    pad_id = pad_token_id(tok)
    # LoRA on the top blocks only: cache the hidden state entering the first trainable block.
    start_block = first_trainable_block(model) if config.finetune == "lora" and config.lora_top_layers else 0
    ref_model = None
    if config.kl_coef > 0 and config.finetune == "full":
        import copy

        ref_model = copy.deepcopy(model).eval().requires_grad_(False)

    optimizer = torch.optim.AdamW(trainable_parameters(model), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: cosine_factor(s, config.n_steps))
    if not resume and dp.main:
        write_run_config(run_dir, config, "rl", model_info(model).to_dict())
    dp.barrier()
    ckpt, step, rows, wall0 = resume_from_latest(run_dir, model, optimizer, scheduler) if resume else (None, 0, [], 0.0)
    last_good = ckpt
    t_start = time.time()
    checked_split = False

    bar = tqdm(total=config.n_steps, initial=step, desc="train rl", disable=not (progress and dp.main), dynamic_ncols=True)
    try:
        while step < config.n_steps:
            t0 = time.time()
            maze_seeds, rollout_seed = step_seeds(config.seed, step, config.mazes_per_step, TRAIN_STREAM)
            model.eval()
            episodes = rollout(
                model, tok, config.maze, dp.shard(maze_seeds), config.group_size, config.temperature,
                seed=rollout_seed + dp.rank, cache_layer=start_block or None, chat=chat,
            )
            t1 = time.time()
            if start_block and not checked_split:
                diff = split_forward_error(model, episodes[0], chat.dir_ids, config.temperature, start_block)
                if diff > SPLIT_ATOL:  # the family changes inputs_embeds before its first block: run every block
                    if dp.main:
                        tqdm.write(f"train rl: {type(model).__name__}'s split forward from block {start_block} differs from the full "
                                   f"forward by {diff:.1e}; the update runs every block")
                    start_block = 0
                checked_split = True
            t = episode_tensors(episodes, config.group_size)
            advantages = compute_advantages(config.algo, t, config.gamma)
            factor = cosine_factor(step, config.n_steps)
            beta = config.entropy_beta * factor
            lr = optimizer.param_groups[0]["lr"]
            if config.lora_dropout > 0 or config.finetune == "full":
                model.train()
            try:
                norm = config.loss_norm or float(config.n_episodes * config.maze.n_moves)
                parts = update(model, optimizer, episodes, t, advantages, config, beta, chat.dir_ids, start_block, pad_id, ref_model, step, norm, dp)
            except TrainingDiverged as e:
                where = last_good_note(last_good)
                raise TrainingDiverged(f"{e}; training stopped, {where}. Lower --lr or --max-grad-norm and --resume") from None
            scheduler.step()
            step += 1
            t2 = time.time()
            rets = t["returns"].flatten()
            n_eps, ret_sum, ret_sq, golds, molds, tokens = dp.sum([
                len(episodes), float(rets.sum()), float((rets.double() ** 2).sum()),
                sum(ep.golds for ep in episodes), sum(ep.molds for ep in episodes), sum(len(ep.token_ids) for ep in episodes),
            ])
            mean_ret = ret_sum / n_eps
            row = {
                "step": step,
                "mean_return": mean_ret,
                "std_return": float(np.sqrt(max(ret_sq / n_eps - mean_ret**2, 0.0) * n_eps / max(n_eps - 1, 1))),
                "golds_per_episode": golds / n_eps,
                "molds_per_episode": molds / n_eps,
                "entropy": parts["entropy"],
                "equalized_entropy": parts["equalized_entropy"],
                "entropy_bonus": beta * parts["equalized_entropy"],
                "beta": beta,
                "loss": parts["loss"],
                "objective": parts["objective"],
                "kl": parts["kl"],
                "clip_frac": parts["clip_frac"],
                "grad_norm": parts["grad_norm"],
                "lr": lr,
                "n_episodes": int(n_eps),
                "tokens": int(tokens),
                "rollout_time": t1 - t0,
                "update_time": t2 - t1,
                "step_time": t2 - t0,
                "wall_time": wall0 + (t2 - t_start),
                "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            }
            rows.append(row)
            if dp.main:
                atomic_write_parquet(run_dir / "metrics.parquet", pd.DataFrame(rows), metadata={"config": config.to_dict()})
            if step % config.checkpoint_every == 0 or step == config.n_steps:
                if dp.main:
                    save_checkpoint(run_dir, step, model, tok, optimizer, scheduler, rows)
                last_good = Path(run_dir) / "checkpoints" / f"step_{step:06d}"
                dp.barrier()
            bar.update(1)
            bar.set_postfix(ret=f"{row['mean_return']:+.1f}", gold=f"{row['golds_per_episode']:.2f}", mold=f"{row['molds_per_episode']:.2f}", H=f"{row['entropy']:.2f}")
    finally:
        bar.close()
    return final_checkpoint(run_dir)


def read_metrics(run_dir: str | Path) -> pd.DataFrame:
    return pd.read_parquet(Path(run_dir) / "metrics.parquet")
