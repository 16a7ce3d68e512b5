"""`welfare-axis demo`: the live steering web app (and `--ship-from RUN` to regenerate the shipped vectors)."""

from __future__ import annotations

import argparse
import sys
import threading
import time

from welfare_axis.options import UserError, add_model_args


def register(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="live steering demo in the browser (Gradio) with an HTTP API",
        description="Open a local web app: steered vs unsteered replies streamed side by side with a welfare meter, "
        "the maze played live, alpha sweeps, vector export, and a JSON API (/api/steer). With no arguments it "
        "uses the default model and the vectors shipped with the package.",
    )
    add_model_args(p)
    g = p.add_argument_group("vectors (default: the shipped vectors of the default model)")
    g.add_argument("--vectors", default=None, help="concept-vector folder (vectors.safetensors) to steer with")
    g.add_argument("--control", default=None, help="naive-model concept-vector folder (u_* controls)")
    g.add_argument("--analysis", default=None, help="with --vectors: a folder holding layer_choice.json")
    g.add_argument("--run", default=None, metavar="RUN_DIR", help="take vectors, controls, layer choice and best layer from a reproduce run")
    g.add_argument("--ship-from", default=None, metavar="RUN_DIR",
                   help="regenerate the package's shipped vectors from a reproduce run, then exit")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1; no public share links)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.set_defaults(func=run_demo)


def load_source(args):
    from welfare_axis.demo.shipped import load_shipped, source_from_dirs, source_from_run

    if args.run and args.vectors:
        raise UserError("give either --run RUN_DIR or --vectors DIR, not both")
    if args.run:
        return source_from_run(args.run)
    if args.vectors:
        return source_from_dirs(args.vectors, args.control, args.analysis)
    if args.control or args.analysis:
        raise UserError("--control and --analysis go with --vectors DIR")
    return load_shipped()


def _check_port(host: str, port: int) -> None:
    import socket

    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError as e:
            raise UserError(f"cannot listen on {host}:{port} ({e.strerror}); pick another --port") from None


def run_demo(args: argparse.Namespace) -> int:
    if args.ship_from:
        from welfare_axis.demo.shipped import ship_from_run

        out = ship_from_run(args.ship_from)
        print(f"wrote the shipped vectors from {args.ship_from} to {out}")
        return 0
    if not 0 < args.port < 65536:
        raise UserError(f"--port must be in 1..65535, got {args.port}")
    _check_port(args.host, args.port)  # before the model loads: a busy port is one line, not a late uvicorn error
    t0 = time.perf_counter()
    from training.models import load_model
    from welfare_axis.demo.service import DemoService

    source = load_source(args)
    model, tokenizer = load_model(args.model, device=args.device, dtype=args.dtype, checkpoint=args.checkpoint)
    service = DemoService(model, tokenizer, source)
    service.residual_norm(service.default_layer)  # the alpha unit, measured once before the first request

    from welfare_axis.demo.app import server

    srv = server(service, args.host, args.port)

    def announce() -> None:  # once uvicorn listens, so the time is the real start-up time
        while not srv.started and not srv.should_exit:
            time.sleep(0.05)
        if srv.started:
            print(f"welfare-axis demo ready in {time.perf_counter() - t0:.1f} s: http://{args.host}:{args.port}/ "
                  "(API: POST /api/steer; Ctrl-C stops)", file=sys.stderr, flush=True)

    threading.Thread(target=announce, daemon=True).start()
    srv.run()
    return 0
