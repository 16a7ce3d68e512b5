"""The demo's web app: a Gradio UI (Chat, Maze, Sweep tabs) and a JSON API on one FastAPI app.

Gradio because it is the field's convention for ML demos and streams generator outputs to the
page with no front-end code; the JSON API is plain FastAPI (which Gradio runs on) so a curl
call is one request rather than Gradio's two-step event API. Everything the UI and the API do
goes through `DemoService`, whose lock keeps one generation on the model at a time. Bad input
becomes one line in the status box (UI) or a 400 with {"error": ...} (API); the server survives.

Offline: analytics off, a theme with system fonts only (no font fetches), no share links.
"""

from __future__ import annotations

import html
import os
import tempfile

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402
import pandas as pd  # noqa: E402
from fastapi import Request  # noqa: E402  (module level: the route annotations are resolved from here)

from training.models import model_info  # noqa: E402
from welfare_axis.demo.maze_play import new_game, play_move  # noqa: E402
from welfare_axis.demo.service import MAX_ALPHA, DemoError, DemoService, Reply  # noqa: E402

THEME = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
CSS = """
.meter { line-height: 1.9; font-family: ui-monospace, monospace; white-space: pre-wrap; }
.meter .tok { border-radius: 3px; padding: 1px 0; }
#status { min-height: 1.5em; }
"""


def _error(e: Exception) -> str:
    if isinstance(e, DemoError):
        return f"⚠ {e}"
    return f"⚠ internal error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


# -- welfare meter ------------------------------------------------------------------------------------
def meter_html(reply: Reply, centre: float, scale: float, pane: str) -> str:
    """Tokens coloured by projection: green above the unsteered mean (toward Gold), red below (toward Mold)."""
    spans = []
    for tok, p in zip(reply.tokens, reply.projections):
        x = max(-1.0, min(1.0, (p - centre) / scale)) if scale > 0 else 0.0
        rgb = "46,160,67" if x >= 0 else "218,54,51"
        spans.append(f'<span class="tok" data-proj="{p:.4f}" style="background: rgba({rgb},{abs(x) * 0.8:.3f})">'
                     f"{html.escape(tok)}</span>")
    return f'<div class="meter" data-pane="{pane}">{"".join(spans)}</div>'


def meter_outputs(base: Reply, steered: Reply):
    """Both meters on one colour scale (centred on the unsteered mean) and the projection plot's data."""
    ref = base.projections or steered.projections or [0.0]
    centre = sum(ref) / len(ref)
    scale = max([abs(p - centre) for p in base.projections + steered.projections] or [1.0]) or 1.0
    rows = [{"token": i, "projection": p, "pane": name}
            for name, r in (("unsteered", base), ("steered", steered)) for i, p in enumerate(r.projections)]
    plot = pd.DataFrame(rows or [{"token": 0, "projection": 0.0, "pane": "unsteered"}])
    return meter_html(base, centre, scale, "unsteered"), meter_html(steered, centre, scale, "steered"), plot


def _specs(vector, alpha, extra) -> list:
    specs = [[vector, alpha]]
    if isinstance(extra, pd.DataFrame):
        extra = extra.values.tolist()
    for row in extra or []:
        if row and len(row) >= 2 and str(row[0]).strip():
            specs.append([str(row[0]).strip(), row[1]])
    return specs


# -- the UI -------------------------------------------------------------------------------------------------
def build_blocks(service: DemoService) -> gr.Blocks:
    names = service.vector_names()
    src = service.source
    with gr.Blocks(title="welfare-axis live steering") as blocks:
        gr.Markdown(
            f"## welfare-axis: live steering\nModel `{getattr(model_info(service.model), 'model_id', '?')}`, "
            f"{service.n_layers} layers; vectors from `{src.provenance.get('source_run') or src.provenance.get('vectors', '?')}`. "
            f"alpha 1 adds {src.unit_ratio:g} x the mean residual norm at the layer; layer l = input of block l "
            f"(default {service.default_layer}: the run's best steering layer)."
        )
        status = gr.Markdown("", elem_id="status")
        with gr.Tab("Chat"):
            with gr.Row():
                vector = gr.Dropdown(names, value=names[0] if "v_mold" not in names else "v_mold", label="vector", elem_id="vector")
                alpha = gr.Slider(-MAX_ALPHA, MAX_ALPHA, value=4, step=0.5, label="alpha", elem_id="alpha")
                layer = gr.Slider(0, service.n_layers - 1, value=service.default_layer, step=1, label="layer", elem_id="layer")
            with gr.Row():
                temperature = gr.Number(0.0, label="temperature (0 = greedy)", elem_id="temperature")
                seed = gr.Number(0, label="seed", precision=0, elem_id="seed")
                max_tokens = gr.Number(48, label="max new tokens", precision=0, elem_id="max-tokens")
                meter = gr.Dropdown(["welfare", *names], value="welfare", label="meter axis (welfare = v_gold - v_mold)", elem_id="meter")
            with gr.Accordion("More vectors (added to the one above) and uploads", open=False):
                extra = gr.Dataframe(headers=["vector", "alpha"], datatype=["str", "number"], row_count=1, column_count=2,
                                     label="vector, alpha", interactive=True, elem_id="extra")
                upload = gr.File(label="control vector (.safetensors, .pt, llama.cpp .gguf)", file_types=[".safetensors", ".pt", ".gguf"])
            with gr.Row():
                chat_u = gr.Chatbot(label="unsteered", elem_id="pane-unsteered", height=260)
                chat_s = gr.Chatbot(label="steered", elem_id="pane-steered", height=260)
            with gr.Row():
                meter_u = gr.HTML(elem_id="meter-unsteered")
                meter_s = gr.HTML(elem_id="meter-steered")
            plot = gr.LinePlot(x="token", y="projection", color="pane", label="projection on the meter axis per token", height=220)
            with gr.Row():
                prompt = gr.Textbox("How are you feeling right now?", label="prompt", elem_id="prompt", scale=4)
                send = gr.Button("Send", variant="primary", elem_id="send", scale=1)
            with gr.Row():
                export = gr.Button("Export current vector (GGUF + safetensors)", elem_id="export")
                files = gr.File(label="exported", file_count="multiple", elem_id="exported")

        def on_send(p, v, a, l, t, s, n, m, ex, hist_u, hist_s):
            hist_u, hist_s = list(hist_u or []), list(hist_s or [])
            try:
                req = service.request(p, _specs(v, a, ex), l, t, s, n, m)
                stream = service.stream(req)
                turn = [{"role": "user", "content": p}]
                for base, steered in stream:
                    mu, ms, df = meter_outputs(base, steered)
                    yield (hist_u + turn + [{"role": "assistant", "content": base.text}],
                           hist_s + turn + [{"role": "assistant", "content": steered.text}], mu, ms, df, "")
            except Exception as e:  # one line for the user, never a dead server
                yield hist_u, hist_s, gr.update(), gr.update(), gr.update(), _error(e)

        send.click(on_send, [prompt, vector, alpha, layer, temperature, seed, max_tokens, meter, extra, chat_u, chat_s],
                   [chat_u, chat_s, meter_u, meter_s, plot, status], concurrency_limit=1)

        def on_upload(f):
            try:
                name = service.add_upload(f if isinstance(f, str) else f.name)
                choices = service.vector_names()
                return gr.update(choices=choices, value=name), gr.update(choices=["welfare", *choices]), f"loaded {name}"
            except Exception as e:
                return gr.update(), gr.update(), _error(e)

        upload.upload(on_upload, [upload], [vector, meter, status])

        def on_export(v, a, l, ex):
            try:
                return [str(p) for p in service.export(_specs(v, a, ex), l, tempfile.mkdtemp(prefix="welfare-axis-export-"))], ""
            except Exception as e:
                return None, _error(e)

        export.click(on_export, [vector, alpha, layer, extra], [files, status])
        _maze_tab(service, status, vector, alpha, layer, extra, temperature)
        _sweep_tab(service, status, vector, layer)
    return blocks


def _maze_tab(service, status, vector, alpha, layer, extra, temperature) -> None:
    with gr.Tab("Maze"):
        gr.Markdown("The demo's model plays (or you play) one maze; per move: the policy over N/E/S/W, the tiles entered, "
                    "the reward, and the projection of the move's token on v_Gold and v_Mold at their layers l*. "
                    "The same seed replays the same maze.")
        game = gr.State(None)
        with gr.Row():
            maze_seed = gr.Number(0, label="maze seed", precision=0, elem_id="maze-seed")
            steer_policy = gr.Checkbox(False, label="steer the policy with the Chat tab's vectors", elem_id="steer-policy")
            reset = gr.Button("New maze", elem_id="maze-new")
            policy = gr.Button("Policy move", variant="primary", elem_id="maze-policy")
        with gr.Row():
            moves = {d: gr.Button(d, elem_id=f"maze-{d}", min_width=40) for d in ("N", "E", "S", "W")}
        view = gr.Textbox(label="local view", lines=10, elem_id="maze-view")
        log = gr.Dataframe(label="moves", elem_id="maze-log", wrap=True)

        def on_reset(s):
            try:
                g = new_game(service, s)
                return g, g.view(), pd.DataFrame(), ""
            except Exception as e:
                return None, gr.update(), gr.update(), _error(e)

        def on_move(action, g, s, sp, v, a, l, ex, t):
            try:
                g = g or new_game(service, s)
                play_move(service, g, action, _specs(v, a, ex) if sp else [], l, float(t or 0))
                return g, g.view() + ("\n(maze over)" if g.done else ""), pd.DataFrame(g.log), ""
            except Exception as e:
                return g, gr.update(), gr.update(), _error(e)

        reset.click(on_reset, [maze_seed], [game, view, log, status])
        inputs = [game, maze_seed, steer_policy, vector, alpha, layer, extra, temperature]
        policy.click(lambda *x: on_move(None, *x), inputs, [game, view, log, status], concurrency_limit=1)
        for d, b in moves.items():
            b.click(lambda *x, d=d: on_move(d, *x), inputs, [game, view, log, status], concurrency_limit=1)


def _sweep_tab(service, status, vector, layer) -> None:
    with gr.Tab("Sweep"):
        with gr.Row():
            prompt = gr.Textbox("How are you feeling right now?", label="prompt", scale=3, elem_id="sweep-prompt")
            alphas = gr.Textbox("-8,-4,0,4,8", label="alphas", elem_id="sweep-alphas")
            run = gr.Button("Sweep", variant="primary", elem_id="sweep-run")
        table = gr.Dataframe(label="replies and sentiment (VADER, -5..5)", wrap=True, elem_id="sweep-table")
        plot = gr.LinePlot(x="alpha", y="sentiment", label="sentiment by alpha", height=220)
        evals = service.source.evals
        if evals:
            rows = [{"vector": k, "slope per alpha": round(v.get("slope", float("nan")), 3),
                     "95% CI": f"[{v.get('ci_lo', float('nan')):+.2f}, {v.get('ci_hi', float('nan')):+.2f}]",
                     **{f"mean @ {a}": round(m, 2) for a, m in v.get("mean_by_alpha", {}).items()}}
                    for k, v in evals["vectors"].items()]
            gr.Dataframe(pd.DataFrame(rows), label=f"the run's sentiment eval ({evals.get('metric') or 'sentiment'})")

        def on_sweep(p, a, v, l):
            try:
                rows = service.sweep(p, v, [x for x in str(a).replace(" ", "").split(",") if x], l)
                df = pd.DataFrame(rows)
                return df, df[["alpha", "sentiment"]], ""
            except Exception as e:
                return gr.update(), gr.update(), _error(e)

        run.click(on_sweep, [prompt, alphas, vector, layer], [table, plot, status], concurrency_limit=1)


# -- the HTTP API -------------------------------------------------------------------------------------------
def make_app(service: DemoService):
    """FastAPI app: /api/info, /api/steer, /api/sweep, and the Gradio UI at /."""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    app = FastAPI(title="welfare-axis demo API")

    async def body(request: Request) -> dict:
        try:
            data = await request.json()
        except Exception:
            raise DemoError("the request body must be JSON") from None
        if not isinstance(data, dict):
            raise DemoError("the request body must be a JSON object")
        return data

    @app.exception_handler(DemoError)
    async def bad_input(_request, e: DemoError):
        return JSONResponse({"error": str(e)}, status_code=400)

    @app.exception_handler(Exception)
    async def internal(_request, e: Exception):
        return JSONResponse({"error": _error(e).removeprefix("⚠ ")}, status_code=500)

    @app.get("/api/info")
    def info():
        return {"vectors": service.vector_names(), "n_layers": service.n_layers, "default_layer": service.default_layer,
                "unit_ratio": service.source.unit_ratio, "provenance": service.source.provenance,
                "model": getattr(model_info(service.model), "to_dict", dict)()}

    def steer_sync(d: dict) -> dict:
        specs = d.get("vectors") or [[d.get("vector", "v_mold"), d.get("alpha", 0.0)]]
        req = service.request(d.get("prompt"), specs, d.get("layer"), d.get("temperature", 0.0), d.get("seed", 0),
                              d.get("max_new_tokens", 48), d.get("meter", "welfare"))
        return service.steer(req)

    @app.post("/api/steer")
    async def steer(request: Request):
        """{prompt, vector, alpha | vectors: [[name, alpha], ...], layer?, temperature?, seed?, max_new_tokens?, meter?}."""
        from starlette.concurrency import run_in_threadpool

        return await run_in_threadpool(steer_sync, await body(request))  # generation blocks: keep the event loop free

    @app.post("/api/sweep")
    async def sweep(request: Request):
        """{prompt, vector, alphas: [..], layer?, temperature?, seed?, max_new_tokens?} -> replies and sentiment per alpha."""
        from starlette.concurrency import run_in_threadpool

        d = await body(request)
        alphas = d.get("alphas") or [-8, -4, 0, 4, 8]
        if not isinstance(alphas, list):
            raise DemoError("alphas must be a JSON list of numbers")
        rows = await run_in_threadpool(service.sweep, d.get("prompt"), d.get("vector", "v_mold"), alphas, d.get("layer"),
                                       d.get("temperature", 0.0), d.get("seed", 0), d.get("max_new_tokens", 40))
        return {"rows": rows}

    return gr.mount_gradio_app(app, build_blocks(service), path="/", theme=THEME, css=CSS, ssr_mode=False,
                               footer_links=["api"])


def server(service: DemoService, host: str = "127.0.0.1", port: int = 7860):
    """A uvicorn server for the app (call .run(), or run it in a thread and wait for .started)."""
    import uvicorn

    config = uvicorn.Config(make_app(service), host=host, port=port, log_level="warning")
    return uvicorn.Server(config)
