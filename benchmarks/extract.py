"""Extraction speed against a plain forward pass of the same batches, and peak memory vs N.

    .venv/bin/python benchmarks/extract.py [--model smollm2-135m-instruct] [-n 16] [--max-moves 5]

1. Throughput (trajectories/s), measured within one run on the same length-sorted,
   right-padded batches: (a) our capture (hooks on every block, last token kept, LM head
   skipped), (b) a plain `model(...)` forward without hooks (full logits, as a user would
   call it), (c) the base `model.model(...)` forward without hooks (no LM head), (d) the
   capture with the prefix common to all trajectories (the user-turn header and the start of
   the maze prompt) run once into a KV cache (`iter_common_prefix_captures`, what extraction uses).
   Goal: capture / plain >= 0.9.
2. Peak resident memory of `extract_vectors` (streaming class sums, activations written to
   disk) in fresh subprocesses for N and 2N per class: should be flat in N.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch

MEM_SCRIPT = """
import os, sys, json, tempfile, threading, time
from training.models import load_model
from probes.extract import extract_vectors
page = os.sysconf("SC_PAGE_SIZE")
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * page / 2**20
model, tok = load_model(sys.argv[1])
base, peak, done = rss(), [0.0], [False]
def poll():  # ru_maxrss is dominated by the model load, so sample current RSS during extraction
    while not done[0]:
        peak[0] = max(peak[0], rss()); time.sleep(0.02)
t = threading.Thread(target=poll); t.start()
with tempfile.TemporaryDirectory() as d:
    extract_vectors(model, tok, int(sys.argv[2]), batch_size=8, progress=False, max_moves=int(sys.argv[3]), out_dir=d)
done[0] = True; t.join()
print(json.dumps({"after_load_mb": base, "peak_mb": peak[0]}))
"""


def throughput(model, tok, n: int, max_moves: int, batch_size: int, repeats: int) -> dict:
    from probes.capture import (
        _span_weights,
        capture_batch,
        common_prefix_length,
        iter_common_prefix_captures,
        last_token_spans,
        tokenize_texts,
    )
    from training.structure import pad_batch
    from probes.extract import build_examples

    texts, _ = build_examples(tok, n, 123, None, max_moves)
    ids = tokenize_texts(tok, texts)
    spans = last_token_spans(ids)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    batches = []
    for s in range(0, len(order), batch_size):
        b = order[s : s + batch_size]
        input_ids, mask = pad_batch([ids[i] for i in b], tok.pad_token_id)
        batches.append((input_ids, mask, _span_weights([spans[i] for i in b], input_ids.shape[1])))
    layers = list(range(model.config.num_hidden_layers))

    def run_capture():
        for input_ids, mask, w in batches:
            capture_batch(model, input_ids, mask, w, layers)

    def run_plain():
        with torch.inference_mode():
            for input_ids, mask, _ in batches:
                model(input_ids=input_ids, attention_mask=mask, use_cache=False)

    def run_base():
        with torch.inference_mode():
            for input_ids, mask, _ in batches:
                model.model(input_ids=input_ids, attention_mask=mask, use_cache=False)

    def run_common_prefix():
        for _ in iter_common_prefix_captures(model, ids, layers, batch_size, tok.pad_token_id):
            pass

    fns = {"capture": run_capture, "capture_common_prefix": run_common_prefix, "plain_forward": run_plain, "base_forward": run_base}
    times = {k: [] for k in fns}
    run_base()  # warm-up
    for _ in range(repeats):  # interleaved, so load changes on the shared machine hit all three alike
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    best = {k: min(v) for k, v in times.items()}
    n_traj = len(texts)
    return {
        "trajectories": n_traj,
        "tokens": int(sum(len(x) for x in ids)),
        "common_prefix_tokens": common_prefix_length(ids),
        "traj_per_s": {k: n_traj / t for k, t in best.items()},
        "ratio_capture_vs_plain": best["plain_forward"] / best["capture"],
        "ratio_capture_vs_base": best["base_forward"] / best["capture"],
        "speedup_common_prefix": best["capture"] / best["capture_common_prefix"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("-n", type=int, default=8, help="trajectories per class for the throughput test")
    p.add_argument("--max-moves", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--mem-n", type=int, default=8, help="N per class for the memory test (and 4x that)")
    p.add_argument("--skip-throughput", action="store_true")
    args = p.parse_args()

    from training.models import load_model

    if not args.skip_throughput:
        model, tok = load_model(args.model)
        res = throughput(model, tok, args.n, args.max_moves, args.batch_size, args.repeats)
        print(json.dumps(res, indent=1))
        print(f"capture / plain forward: {res['ratio_capture_vs_plain']:.2f}x (goal >= 0.9); common-prefix cache: "
              f"{res['speedup_common_prefix']:.2f}x the capture ({res['common_prefix_tokens']} shared tokens)", flush=True)
        del model

    mem = {}
    for n in (args.mem_n, 4 * args.mem_n):
        out = subprocess.run([sys.executable, "-c", MEM_SCRIPT, args.model, str(n), "2"], capture_output=True, text=True, check=True)
        mem[n] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"N={n}/class: peak RSS during extraction {mem[n]['peak_mb']:.0f} MB (after model load {mem[n]['after_load_mb']:.0f} MB)", flush=True)
    a, b = (mem[args.mem_n]["peak_mb"] - mem[args.mem_n]["after_load_mb"], mem[4 * args.mem_n]["peak_mb"] - mem[4 * args.mem_n]["after_load_mb"])
    print(f"extraction working memory: {a:.0f} MB at N={args.mem_n}, {b:.0f} MB at N={4 * args.mem_n} (flat if about equal)")


if __name__ == "__main__":
    main()
