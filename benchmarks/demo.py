"""The demo's streaming speed, steered vs unsteered, and its start-up time.

Streaming: the demo's own loop (`stream_pair`: the unsteered and the steered reply as one batch
of two, with the welfare meter) on the default model, greedy, a fixed number of new tokens.
The "unsteered" arm replaces the Steerer by a no-op (the meter still reads the residual); the
"steered" arm is what the demo runs. Arms alternate and the best of --repeats is compared
(least disturbed by other processes on shared cores). Reported: time to first token (prefill +
first sample) and tokens/s per pane. Goal: steering costs < 5%.

Start-up: `welfare-axis demo --port P` in a fresh process, timed until /api/info answers
(goal: under 10 s on 2 cores with the converted model cached).

    python benchmarks/demo.py [--tokens 48] [--repeats 3] [--no-startup]
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import subprocess
import sys
import time
import urllib.request

import torch

import welfare_axis.demo.service as svc
from training.models import load_model
from welfare_axis.demo.service import DemoService
from welfare_axis.demo.shipped import load_shipped


class _NoSteer:
    def __init__(self, *a, **k):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def set_prefill_mask(self, mask) -> None:
        pass


class _NoEos:
    """The tokenizer with no EOS id, so every run generates exactly --tokens tokens."""

    eos_token_id = -1

    def __init__(self, tok):
        self._tok = tok

    def __getattr__(self, name):
        return getattr(self._tok, name)

    def __call__(self, *a, **k):
        return self._tok(*a, **k)


@contextlib.contextmanager
def unsteered():
    """stream_pair without the Steerer (the meter still reads): the baseline steering is measured against."""
    old = svc.Steerer
    svc.Steerer = _NoSteer
    try:
        yield
    finally:
        svc.Steerer = old


def time_stream(service: DemoService, delta, axis, tokens: int) -> tuple[float, float]:
    """(time to first token, tokens/s per pane after it); EOS never stops the loop early."""
    t0 = time.perf_counter()
    first = None
    n = 0
    for _ in svc.stream_pair(service.model, _NoEos(service.tokenizer), "How are you feeling right now?", delta,
                             service.default_layer, axis, 0.0, 0, tokens):
        n += 1
        first = first or time.perf_counter() - t0
    total = time.perf_counter() - t0
    return first, (n - 2) / (total - first)  # the last yield repeats the final state


def startup_time(timeout: float = 120.0) -> float:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "welfare_axis", "demo", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while time.perf_counter() - t0 < timeout:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/info", timeout=1).read()
                return time.perf_counter() - t0
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("the demo did not start")
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-startup", action="store_true")
    args = ap.parse_args()
    service = DemoService(*load_model("smollm2-135m-instruct"), load_shipped())
    layer = service.default_layer
    delta, axis = service.delta([("v_mold", 4.0)], layer), service.axis("welfare", layer)
    print(f"default model, {torch.get_num_threads()} threads, {args.tokens} new tokens x 2 panes, layer {layer}")
    runs = {"unsteered": [], "steered": []}
    time_stream(service, delta, axis, 4)  # warm-up
    for _ in range(args.repeats):
        with unsteered():
            runs["unsteered"].append(time_stream(service, delta, axis, args.tokens))
        runs["steered"].append(time_stream(service, delta, axis, args.tokens))
    best = {k: (min(r[0] for r in v), max(r[1] for r in v)) for k, v in runs.items()}
    for k, (ttft, tps) in best.items():
        print(f"  {k:<9}  time to first token {ttft * 1000:6.0f} ms   {tps:6.1f} tokens/s per pane")
    cost = best["unsteered"][1] / best["steered"][1] - 1
    print(f"  steering cost: {cost:+.1%} time per token (goal < 5%)")
    if not args.no_startup:
        t = min(startup_time() for _ in range(2))
        print(f"start-up: `welfare-axis demo` answers /api/info after {t:.1f} s (goal < 10 s)")


if __name__ == "__main__":
    main()
