"""Tokens/s of steered vs unsteered batched generation (goal: steering costs < 5%).

Both arms run the same decode loop for a fixed number of new tokens (EOS disabled), on the
same left-padded batch of sentiment prompts; the steered arm adds a per-row vector at
floor(2L/3) with the prefill assistant mask, as the evals do. Arms alternate (A B A B ...)
and the best runs are compared (least disturbed by other processes); speeds are per second
of this process's CPU time, which is robust to sharing the cores (use --threads 1 for a
clean figure: spinning worker threads inflate CPU time) and per wall-clock second.
Also prints the time the default sentiment eval would take at the measured speed.

    python benchmarks/steer.py [--model smollm2-135m-instruct] [--batch 40] [--tokens 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from steering.prompts import sentiment_prompts
from steering.steerer import Steerer, decode, encode_chat, left_pad
from steering.vectors import default_layer
from training.models import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--batch", type=int, default=40)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tok = load_model(args.model)
    layer = default_layer(model.config.num_hidden_layers)
    prompts = [p.text for p in sentiment_prompts()]
    prompts = (prompts * (args.batch // len(prompts) + 1))[: args.batch]
    rows = [encode_chat(tok, p) for p in prompts]
    ids, attn, steer = left_pad([r[0] for r in rows], [r[1] for r in rows], tok.pad_token_id)
    deltas = torch.randn(args.batch, model.config.hidden_size, generator=torch.Generator().manual_seed(0)) * 2.0

    def run(steered: bool) -> tuple[float, float]:
        t0, c0 = time.perf_counter(), time.process_time()
        if steered:
            with Steerer(model, deltas, layer, 1.0) as s:
                s.set_prefill_mask(steer)
                out = decode(model, ids, attn, args.tokens, 0.7, eos_id=-1, pad_id=tok.pad_token_id, generator=torch.Generator().manual_seed(0))
        else:
            out = decode(model, ids, attn, args.tokens, 0.7, eos_id=-1, pad_id=tok.pad_token_id, generator=torch.Generator().manual_seed(0))
        assert out.shape == (args.batch, args.tokens)
        return out.numel() / (time.process_time() - c0), out.numel() / (time.perf_counter() - t0)

    run(False)  # warm-up
    plain, steered = [], []
    for _ in range(args.repeats):
        plain.append(run(False))
        steered.append(run(True))
    p, s = max(x[0] for x in plain), max(x[0] for x in steered)
    print(f"model {args.model}, batch {args.batch}, {args.tokens} new tokens, layer {layer}, threads {torch.get_num_threads()}")
    for name, runs, best in (("unsteered", plain, p), ("steered", steered, s)):
        print(f"{name:<10} best {best:7.1f} tok/CPU-s   runs (tok/CPU-s, tok/wall-s) {[(round(c, 1), round(w, 1)) for c, w in runs]}")
    print(f"steering cost: {100 * (p / s - 1):+.1f}% CPU time per token (goal < 5%)")
    print(f"median wall-clock: unsteered {statistics.median(w for _, w in plain):.1f}, steered {statistics.median(w for _, w in steered):.1f} tok/s")
    n_gen = (1 + 5 * 4) * 40  # shared alpha 0 + 5 vectors x 4 nonzero alphas, 40 prompts
    for k, new in ((1, 40), (2, 40), (1, 60)):
        print(f"sentiment eval estimate, k={k}, {new} new tokens: {n_gen * k * new / p / 60:5.1f} min at {p:.0f} tok/s (worst case: no early EOS)")


if __name__ == "__main__":
    main()
