"""SFT on scripted good-policy trajectories (maximise Gold, avoid Mold; docs/study.md, "Training").

Each step draws `sft_batch` fresh mazes from the seed stream, plays the scripted good
policy (with wind, as in RL), and minimises the cross-entropy of the assistant's
direction tokens over the four direction logits (no loss on any other token). SFT has its own fine-tuning mode, trajectory
length and LR schedule (`TrainConfig.sft_*`): the cpu-small preset learns the maze only with a
full fine-tune on one-move trajectories at a constant LR (README, "Status"). Checkpoints and
resume work as in RL.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from core.artifacts import atomic_write_parquet
from envs import good_policy_trajectory
from training.checkpoint import (TrainingDiverged, final_checkpoint, last_good_note, open_run_dir, resume_from_latest, save_checkpoint,
                                 write_run_config)
from training.config import TrainConfig
from training.models import model_info
from training.forward import direction_logprobs
from training.losses import cosine_factor
from training.models import pad_token_id
from training.policy import build_policy, trainable_parameters
from training.rollout import ChatTokens, EpisodeRecord
from training.seeds import SFT_STREAM, step_seeds

def episode_from_messages(chat: ChatTokens, messages: list[dict[str, str]], actions: list[int], maze_seed: int = 0) -> EpisodeRecord:
    """Token ids and action positions of a finished chat, built exactly as a rollout builds them."""
    text, ids = chat.first(messages[0]["content"])
    ep = EpisodeRecord(maze_seed=maze_seed, group=0, env_seed=0, token_ids=list(ids), actions=list(actions), messages=messages)
    for t, a in enumerate(actions):
        ep.action_positions.append(len(ep.token_ids))
        ep.token_ids.append(chat.dir_ids[a])
        if 2 * t + 2 < len(messages):
            text, rest = chat.after_move(text, messages[: 2 * t + 3])
            ep.token_ids += rest
    return ep


def sft_loss(logp4: torch.Tensor, actions: torch.Tensor, norm: float) -> torch.Tensor:
    """Summed negative log-likelihood of the scripted directions over the 4 direction logits, / norm.

    logp4 [B, T, 4]; actions [B, T] (built on the CPU, moved to logp4's device)."""
    return -logp4.gather(-1, actions.to(logp4.device).unsqueeze(-1)).sum() / norm


def train_sft(config: TrainConfig, run_dir: str | Path, resume: bool = False, progress: bool = True) -> Path:
    """Supervised fine-tuning; returns the final checkpoint's model folder."""
    run_dir = Path(run_dir)
    config = open_run_dir(run_dir, config, resume, "sft")  # before any slow work
    sft = config.sft_view()
    model, tok = build_policy(sft)
    chat = ChatTokens(tok, sft.maze.letters)
    pad_id = pad_token_id(tok)
    optimizer = torch.optim.AdamW(trainable_parameters(model), lr=config.sft_lr, weight_decay=config.weight_decay)
    constant = config.sft_schedule == "constant"
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 if constant else cosine_factor(s, config.sft_steps))
    if not resume:
        write_run_config(run_dir, config, "sft", model_info(model).to_dict())
    ckpt, step, rows, wall0 = resume_from_latest(run_dir, model, optimizer, scheduler) if resume else (None, 0, [], 0.0)
    last_good, t_start = ckpt, time.time()
    bar = tqdm(total=config.sft_steps, initial=step, desc="train sft", disable=not progress, dynamic_ncols=True)
    try:
        while step < config.sft_steps:
            maze_seeds, seed = step_seeds(config.seed, step, config.sft_batch, SFT_STREAM)
            trajs = [good_policy_trajectory(ms, seed=seed % 2**31, config=sft.maze, depth=config.sft_lookahead) for ms in maze_seeds]
            episodes = [episode_from_messages(chat, tr.messages, tr.actions, tr.maze_seed) for tr in trajs]
            norm = float(sum(len(ep.actions) for ep in episodes))
            lr = optimizer.param_groups[0]["lr"]
            model.train()
            optimizer.zero_grad(set_to_none=True)
            total, correct = 0.0, 0
            for lo in range(0, len(episodes), config.micro_batch):
                mb = episodes[lo : lo + config.micro_batch]
                logp4 = direction_logprobs(model, mb, chat.dir_ids, 1.0, 0, pad_id)
                actions = torch.tensor([ep.actions for ep in mb], device=logp4.device)
                loss = sft_loss(logp4, actions, norm)
                if not torch.isfinite(loss):
                    where = last_good_note(last_good)
                    raise TrainingDiverged(f"non-finite loss at step {step}; training stopped, {where}. Lower --sft-lr")
                loss.backward()
                total += float(loss.detach())
                correct += int((logp4.argmax(-1) == actions).sum())
            max_norm = config.max_grad_norm if config.max_grad_norm > 0 else float("inf")
            grad_norm = float(torch.nn.utils.clip_grad_norm_(trainable_parameters(model), max_norm))
            optimizer.step()
            scheduler.step()
            model.eval()
            step += 1
            rows.append({
                "step": step, "loss": total, "accuracy": correct / norm, "lr": lr, "grad_norm": grad_norm,
                "moves_per_trajectory": norm / len(episodes),
                "golds_per_episode": sum(tr.golds for tr in trajs) / len(trajs),
                "molds_per_episode": sum(tr.molds for tr in trajs) / len(trajs),
                "wall_time": wall0 + time.time() - t_start,
            })
            atomic_write_parquet(run_dir / "metrics.parquet", pd.DataFrame(rows), metadata={"config": config.to_dict()})
            if step % sft.checkpoint_every == 0 or step == config.sft_steps:
                last_good = save_checkpoint(run_dir, step, model, tok, optimizer, scheduler, rows)
            bar.update(1)
            bar.set_postfix(loss=f"{total:.3f}", acc=f"{correct / norm:.2f}")
    finally:
        bar.close()
    return final_checkpoint(run_dir)
