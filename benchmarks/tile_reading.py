"""Can the model learn to read the maze at all? A supervised learnability check.

    .venv/bin/python benchmarks/tile_reading.py [--model ID] [--tile-set office] [--finetune full|lora]
        [--lr 3e-5] [--top-layers 0] [--rank 16] [--steps 100] [--batch 16] [--probe-only]

RL can only teach the maze if the model can learn to bind a tile symbol to the direction
word of its clause. This isolates that skill with the strongest signal there is: each
example is one observation at a random Path cell with exactly one Gold neighbour, labelled
with the Gold direction, trained with cross-entropy over the four direction logits, with full
fine-tuning (the default) or LoRA. Every `--eval-every` steps it prints P(Gold direction) on 64
held-out observations (chance 0.25) and the first-move Gold excess of `train eval`. On the
default model the defaults reach P = 1.000 at step 100 (about 20 min on 2 cores), after a
sudden drop of the loss around step 70; LoRA r16 showed nothing in 150 steps (README, Status).

`--probe-only` instead fits, per layer, a logistic-regression probe of the Gold direction on
the naive model's residual stream at the answer position (4-fold CV accuracy, chance ~0.25):
how much of the answer the frozen model already computes (about 7 min). Not part of
`make bench`; the README quotes the results.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from envs import MazeConfig, MazeEnv, Tile
from probes.capture import iter_captures, last_token_spans
from training.config import config_from_preset
from training.evaluate import first_move_policy, heldout_maze_seeds, summarize_first_move
from training.forward import direction_logprobs
from training.models import load_model, pad_token_id
from training.policy import build_policy, trainable_parameters
from training.rollout import ChatTokens, EpisodeRecord
from training.sft import episode_from_messages


def one_gold_observations(cfg: MazeConfig, n: int, rng: np.random.Generator) -> list[tuple[str, int]]:
    """`n` (observation, Gold direction) pairs, each from a fresh maze at a random Path cell."""
    env, out = MazeEnv(cfg), []
    while len(out) < n:
        maze_seed = int(rng.integers(2**31 - 1))
        env.reset(seed=0, options={"maze_seed": maze_seed})
        ys, xs = np.nonzero(env.grid == int(Tile.PATH))
        for _ in range(50):
            i = rng.integers(len(xs))
            env.pos = (int(xs[i]), int(ys[i]))  # observation of that cell, as if the agent stood there
            tiles = np.array(env.neighbour_tiles())
            if (tiles == int(Tile.GOLD)).sum() == 1:
                out.append((env._observation(), int(np.flatnonzero(tiles == int(Tile.GOLD))[0])))
                break
    return out


def as_episodes(chat: ChatTokens, examples: list[tuple[str, int]]) -> list[EpisodeRecord]:
    """One-move episodes answering each observation with its Gold direction, as SFT builds them."""
    return [episode_from_messages(chat, [{"role": "user", "content": obs}, {"role": "assistant", "content": chat.letters[a]}], [a])
            for obs, a in examples]


def probe(model_name: str, cfg: MazeConfig, n: int, seed: int) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    model, tok = load_model(model_name)
    chat = ChatTokens(tok, cfg.letters)
    data = one_gold_observations(cfg, n, np.random.default_rng(seed))
    ids = [chat.first(obs)[1] for obs, _ in data]
    layers = list(range(model.config.num_hidden_layers))  # layer l = input of block l (probes/layers.py)
    x = np.zeros((len(ids), len(layers), model.config.hidden_size), dtype=np.float32)
    for idx, acts in iter_captures(model, ids, last_token_spans(ids), layers):
        x[idx] = acts.numpy()
    y = np.array([a for _, a in data])
    print(f"majority-class rate {np.bincount(y).max() / len(y):.2f}")
    for layer in layers:
        acc = cross_val_score(LogisticRegression(C=0.1, max_iter=2000), x[:, layer], y, cv=4).mean()
        print(f"layer {layer:2d}: Gold direction decodable at the answer position, 4-fold accuracy {acc:.2f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct", help="any model `welfare-axis` can load")
    ap.add_argument("--tile-set", default="office")
    ap.add_argument("--top-layers", type=int, default=0, help="LoRA on the top K blocks (0 = all)")
    ap.add_argument("--finetune", choices=("lora", "full"), default="full")
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-5, help="3e-5 suits full fine-tuning; LoRA runs used 3e-4..1e-3")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--eval-every", type=int, default=25)
    ap.add_argument("--seed", type=int, default=123)
    ap.add_argument("--probe-only", action="store_true")
    ap.add_argument("--probe-n", type=int, default=400)
    args = ap.parse_args()
    cfg = config_from_preset(
        "cpu-small", model=args.model, finetune=args.finetune, lora_top_layers=args.top_layers, lora_r=args.rank, lora_alpha=2 * args.rank,
        maze={"tile_set": args.tile_set},
    )
    if args.probe_only:
        probe(args.model, cfg.maze, args.probe_n, args.seed)
        return
    model, tok = build_policy(cfg)
    chat = ChatTokens(tok, cfg.maze.letters)
    rng = np.random.default_rng(args.seed)
    heldout = as_episodes(chat, one_gold_observations(cfg.maze, 64, rng))
    pad_id = pad_token_id(tok)
    optimizer = torch.optim.AdamW(trainable_parameters(model), lr=args.lr)

    def evaluate(step: int) -> None:
        model.eval()
        with torch.no_grad():
            p = [float(lp[0, ep.actions[0]].exp()) for lo in range(0, 64, 16)
                 for ep, lp in zip(heldout[lo : lo + 16], direction_logprobs(model, heldout[lo : lo + 16], chat.dir_ids, 1.0, 0, pad_id))]
            fm = summarize_first_move(first_move_policy(model, tok, cfg.maze, heldout_maze_seeds(64, 0)))
        print(f"step {step:4d}  {step * args.batch:5d} examples  held-out P(Gold direction) {np.mean(p):.3f} "
              f"(chance 0.25)  first-move Gold excess {fm['gold_excess']:+.3f}", flush=True)

    t0 = time.time()
    evaluate(0)
    for step in range(1, args.steps + 1):
        model.train()
        batch = as_episodes(chat, one_gold_observations(cfg.maze, args.batch, rng))
        logp = direction_logprobs(model, batch, chat.dir_ids, 1.0, 0, pad_id)[:, 0]
        loss = -logp[torch.arange(len(batch)), torch.tensor([ep.actions[0] for ep in batch])].mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable_parameters(model), 1.0)
        optimizer.step()
        if step % 10 == 0:
            print(f"step {step:4d}  loss {loss.item():.3f}  ({time.time() - t0:.0f} s)", flush=True)
        if step % args.eval_every == 0 or step == args.steps:
            evaluate(step)


if __name__ == "__main__":
    main()
