"""Speed, FLOP utilisation and peak memory of one Dr. GRPO update on the cpu-small preset.

    .venv/bin/python benchmarks/train_step.py [--preset cpu-small] [--mazes 2] [--group 8]

One rollout (not timed) feeds one update (`training.rl.update`: forward + backward of the
trainable blocks over all episodes, at action positions only, then the optimizer step).
Tokens/s counts episode tokens through the update; FLOPs count forward + backward (3x a
forward) of the blocks actually run, against a matmul peak measured in the same run.
Goal: >= 50% of the matmul peak. Peak resident memory of the whole step is printed too
(goal: under 8 GiB for cpu-small).
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from training.config import config_from_preset
from training.forward import first_trainable_block
from training.losses import cosine_factor
from training.structure import decoder_layers
from training.policy import build_policy, trainable_parameters
from training.rl import compute_advantages, episode_tensors, update
from training.rollout import ChatTokens, rollout
from training.seeds import step_seeds

from rollouts import matmul_peak  # sibling script (benchmarks/ is on sys.path when run directly)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cpu-small")
    ap.add_argument("--mazes", type=int, default=None)
    ap.add_argument("--group", type=int, default=None)
    ap.add_argument("--algo", default="dr_grpo", help="the issue's goal is stated for a Dr. GRPO update, whatever the preset trains with")
    args = ap.parse_args()
    over = {k: v for k, v in (("mazes_per_step", args.mazes), ("group_size", args.group)) if v}
    over["algo"] = args.algo
    cfg = config_from_preset(args.preset, **over)
    model, tok = build_policy(cfg)
    chat = ChatTokens(tok, cfg.maze.letters)
    start = first_trainable_block(model) if cfg.lora_top_layers else 0
    mazes, rseed = step_seeds(cfg.seed, 0, cfg.mazes_per_step)
    eps = rollout(model, tok, cfg.maze, mazes, cfg.group_size, cfg.temperature, seed=rseed, cache_layer=start or None, chat=chat)
    t = episode_tensors(eps, cfg.group_size)
    adv = compute_advantages(cfg.algo, t, cfg.gamma)
    opt = torch.optim.AdamW(trainable_parameters(model), lr=cfg.lr)
    peak = matmul_peak()
    t0 = time.perf_counter()
    update(model, opt, eps, t, adv, cfg, cfg.entropy_beta * cosine_factor(0, cfg.n_steps), chat.dir_ids, start, tok.pad_token_id)
    dt = time.perf_counter() - t0
    peak = max(peak, matmul_peak())

    all_blocks = decoder_layers(model)
    blocks = list(all_blocks)[start:]
    block_params = sum(p.numel() for b in blocks for p in b.parameters())
    c = model.config if hasattr(model, "config") else model.base_model.config
    tokens = sum(ep.action_positions[-1] for ep in eps)
    ctx = sum(ep.action_positions[-1] ** 2 / 2 for ep in eps) / tokens
    attn = 4 * len(blocks) * c.hidden_size * ctx
    flops = 3 * tokens * (2 * block_params + attn)
    print(f"preset {args.preset}: {len(eps)} episodes, {tokens} tokens, blocks {start}..{len(all_blocks) - 1} trained")
    print(f"matmul peak          {peak / 1e9:8.1f} GFLOP/s")
    print(f"update               {dt:8.2f} s   {tokens / dt:8.0f} tokens/s   MFU {flops / dt / peak:6.1%}  (goal >= 50%)")
    print(f"peak RSS of the step {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:8.2f} GiB (goal < 8 GiB)")


if __name__ == "__main__":
    main()
