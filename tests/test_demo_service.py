"""The demo's service (no browser): paired streaming, alpha = 0, the KV cache, the lock, bad input,
uploads, export, the maze, and the shipped default vectors."""

import json
import threading
import time

import pytest
import torch

from probes.layers import LAYER_CONVENTION
from probes.vectors import ConceptVectors
from steering.steerer import steered_generate
from training.models import model_info
from welfare_axis.demo.service import DemoError, DemoService
from welfare_axis.demo.shipped import SHIPPED_DIR, VectorSource, load_shipped

PROMPT = "How are you feeling right now?"


def make_service(lm) -> DemoService:
    model, tok = lm
    g = torch.Generator().manual_seed(1)
    n, h = model.config.num_hidden_layers, model.config.hidden_size
    vec = ConceptVectors({k: torch.randn(n, h, generator=g) for k in ("mold", "gold", "path")})
    ctl = ConceptVectors({k: torch.randn(n, h, generator=g) for k in ("mold", "gold", "path")})
    return DemoService(model, tok, VectorSource(vec, ctl, {"mold": 2, "gold": 1}, 2, {"source_run": "test"}))


@pytest.fixture(scope="module")
def service(lm):
    return make_service(lm)


def test_alpha_zero_is_bit_identical_to_unsteered(service, lm):
    for temperature in (0.0, 1.0):
        out = service.steer(service.request(PROMPT, [("v_mold", 0.0), ("u_gold", 0)], 2, temperature, 3, 16))
        assert out["steered"]["tokens"] == out["unsteered"]["tokens"]
        assert out["steered"]["projections"] == out["unsteered"]["projections"]
    greedy = service.steer(service.request(PROMPT, [("v_mold", 0.0)], 2, 0.0, 0, 16))
    # ... and the same as the pipeline's own unsteered generation
    assert greedy["unsteered"]["text"] == steered_generate(*lm, [PROMPT], None, 2, 0.0, max_new_tokens=16)[0]


def test_steering_changes_the_reply_and_the_meter(service):
    out = service.steer(service.request(PROMPT, [("v_mold", 8.0)], 2, 0.0, 0, 16))
    assert out["steered"]["text"] != out["unsteered"]["text"]
    # the meter reads the residual before the add: the first token is predicted from the same
    # unsteered state in both panes; once the replies part, what they said moves the meter
    s, u = out["steered"], out["unsteered"]
    assert s["projections"][0] == u["projections"][0]
    first = next(i for i, (a, b) in enumerate(zip(s["tokens"], u["tokens"])) if a != b)
    assert s["projections"][first + 1:] != pytest.approx(u["projections"][first + 1:len(s["projections"])])
    assert len(s["projections"]) == len(s["tokens"])


@pytest.mark.parametrize("specs", [[("v_mold", 6.0)], [("v_gold", -4.0), ("random", 3.0)]])
def test_kv_cache_gives_the_same_steered_reply(service, specs):
    req = service.request(PROMPT, specs, 2, 0.0, 0, 20)
    cached, full = service.steer(req, use_cache=True), service.steer(req, use_cache=False)
    assert cached["steered"]["tokens"] == full["steered"]["tokens"]
    assert cached["unsteered"]["tokens"] == full["unsteered"]["tokens"]
    assert cached["steered"]["projections"] == pytest.approx(full["steered"]["projections"], rel=1e-4, abs=1e-3)


def test_same_seed_same_sample_and_another_seed_another(service):
    req = service.request(PROMPT, [("v_mold", 4.0)], 2, 1.0, 11, 12)
    first = service.steer(req)
    assert service.steer(req) == first
    others = [service.steer(service.request(PROMPT, [("v_mold", 4.0)], 2, 1.0, s, 12))["steered"]["text"] for s in (12, 13, 14)]
    assert any(t != first["steered"]["text"] for t in others)  # sampling at temperature 1 depends on the seed


def test_http_api_refuses_an_alpha_the_page_would_not_allow(service):
    from starlette.testclient import TestClient

    from welfare_axis.demo.app import make_app

    with TestClient(make_app(service)) as client:
        r = client.post("/api/steer", json={"prompt": "hi", "vector": "v_mold", "alpha": 1e9})
        ok = client.post("/api/steer", json={"prompt": "hi", "vector": "v_mold", "alpha": 8, "max_new_tokens": 2})
    assert r.status_code == 400 and "-8..8" in r.json()["error"] and "\n" not in r.json()["error"]
    assert ok.status_code == 200 and ok.json()["vectors"] == [["v_mold", 8.0]]


def test_concurrent_requests_do_not_interleave_hooks(service):
    reqs = [service.request(PROMPT, [("v_mold", a)], 2, 0.0, 0, 12) for a in (-8.0, 0.0, 8.0, 4.0)]
    alone = [service.steer(r) for r in reqs]
    overlap, results = [], [None] * len(reqs)

    def run(i):
        results[i] = service.steer(reqs[i])

    # Every forward checks that only one steering hook sits on the layer: a second request
    # entering while another generates would show up as two hooks (and mixed outputs).
    block = service.model.model.layers[2]

    def spy(_m, _a, _k):
        overlap.append(len(block._forward_pre_hooks))

    h = block.register_forward_pre_hook(spy, with_kwargs=True, prepend=True)
    try:
        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(reqs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        h.remove()
    assert results == alone
    assert overlap and max(overlap) == 3  # spy + one Steerer + one meter, never two requests' hooks


def test_lock_is_held_while_streaming(service):
    stream = service.stream(service.request(PROMPT, [("v_mold", 2.0)], 2, 0.0, 0, 8))
    next(stream)
    assert service.lock.locked()
    got = []
    t = threading.Thread(target=lambda: got.append(service.steer(service.request(PROMPT, [], 2, 0.0, 0, 4))))
    t.start()
    time.sleep(0.3)
    assert not got  # waits for the first stream
    list(stream)
    t.join(30)
    assert got and not service.lock.locked()


@pytest.mark.parametrize("kwargs, message", [
    (dict(prompt="", specs=[("v_mold", 1)]), "prompt"),
    (dict(prompt="hi", specs=[("v_mold", "abc")]), "must be a number"),
    (dict(prompt="hi", specs=[("v_mold", float("nan"))]), "finite"),
    (dict(prompt="hi", specs=[("v_mold", 1e9)]), "must be in -8..8"),
    (dict(prompt="hi", specs=[("v_nope", 1)]), "unknown vector"),
    (dict(prompt="hi", specs=[("v_mold", 1)], layer=99), "out of range"),
    (dict(prompt="hi", specs=[("v_mold", 1)], layer="x"), "layer must be a whole number"),
    (dict(prompt="hi", specs=[("v_mold", 1)], temperature=-1), "temperature"),
    (dict(prompt="hi", specs=[("v_mold", 1)], max_new_tokens=0), "max new tokens"),
])
def test_bad_input_is_one_clear_line(service, kwargs, message):
    with pytest.raises(DemoError, match=message) as e:
        service.request(**kwargs)
    assert "\n" not in str(e.value)


def test_vectors_of_the_wrong_size_are_refused(lm, tmp_path):
    model, tok = lm
    bad = ConceptVectors({"mold": torch.randn(model.config.num_hidden_layers, 7)})
    with pytest.raises(DemoError, match="4 layers x 7 but the model has"):
        DemoService(model, tok, VectorSource(bad, None, {}, None, {}))


def test_upload_safetensors_pt_and_gguf(service, tmp_path):
    from safetensors.torch import save_file

    h, n = service.hidden, service.n_layers
    save_file({"x": torch.randn(h)}, str(tmp_path / "one.safetensors"))
    torch.save(torch.randn(n, h), tmp_path / "layers.pt")
    ConceptVectors({"mold": torch.randn(n, h)}).export_gguf("mold", tmp_path / "cv.gguf", layers=[2, 3])
    for f in ("one.safetensors", "layers.pt", "cv.gguf"):
        name = service.add_upload(tmp_path / f)
        assert name in service.vector_names()
        service.direction(name, 2)
    torch.save(torch.randn(h + 1), tmp_path / "wrong.pt")
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf")
    for f, msg in (("wrong.pt", "hidden size"), ("junk.gguf", "cannot read"), ("cv.gguf", None)):
        if msg:
            with pytest.raises(DemoError, match=msg):
                service.add_upload(tmp_path / f)


def test_gguf_upload_round_trips_the_layer(service, tmp_path):
    n, h = service.n_layers, service.hidden
    v = torch.randn(n, h)
    ConceptVectors({"mold": v}).export_gguf("mold", tmp_path / "rt.gguf", layers=[2])
    name = service.add_upload(tmp_path / "rt.gguf")
    assert torch.allclose(service.uploads[name][2], v[2])
    assert service.uploads[name][3].abs().sum() == 0


def test_export_gguf_and_safetensors(service, tmp_path):
    import gguf
    from safetensors import safe_open

    g_path, st_path = service.export([("v_mold", 4.0), ("u_gold", -2.0)], 2, tmp_path)
    d = service.delta([("v_mold", 4.0), ("u_gold", -2.0)], 2)
    reader = gguf.GGUFReader(str(g_path))
    assert [t.name for t in reader.tensors] == ["direction.1"]  # our layer 2 = output of block 1
    assert torch.allclose(torch.tensor(reader.tensors[0].data.copy()).reshape(-1), d, atol=1e-5)
    with safe_open(str(st_path), "pt") as f:
        meta = json.loads(f.metadata()["meta"])
        assert torch.allclose(f.get_tensor("direction"), d)
    assert meta["layer"] == 2 and meta["layer_convention"] == LAYER_CONVENTION and meta["package_version"]
    with pytest.raises(DemoError, match="layers 0 and 1"):
        service.export([("v_mold", 1.0)], 1, tmp_path)


def test_sweep_scores_each_alpha(service):
    rows = service.sweep(PROMPT, "v_gold", [-4, 0, 4], 2, max_new_tokens=8)
    assert [r["alpha"] for r in rows] == [-4, 0, 4]
    assert all(isinstance(r["sentiment"], float) for r in rows)
    assert rows[1]["reply"] == steered_generate(service.model, service.tokenizer, [PROMPT], None, 2, 0.0, max_new_tokens=8)[0]


def test_maze_replays_with_the_same_seed(service):
    from welfare_axis.demo.maze_play import new_game, play_move

    logs = []
    for _ in range(2):
        game = new_game(service, 7)
        play_move(service, game)
        play_move(service, game, "N", [("v_mold", 4.0)], 2, temperature=1.0)
        logs.append(game.log)
    assert logs[0] == logs[1]
    assert {"proj_v_gold@1", "proj_v_mold@2", "reward", "entered"} <= set(logs[0][0])
    with pytest.raises(DemoError, match="move must be"):
        play_move(service, new_game(service, 7), "X")


# -- the shipped default vectors -------------------------------------------------------------------
def test_shipped_vectors_load_with_provenance():
    src = load_shipped()
    assert set(src.vectors.names) >= {"mold", "gold", "path"} and set(src.control.names) >= {"mold", "gold", "path"}
    for cv in (src.vectors, src.control):
        assert cv.meta["layer_convention"] == LAYER_CONVENTION  # made by the current layer convention
        assert cv.vectors["mold"].dtype == torch.float32
    prov = json.loads((SHIPPED_DIR / "provenance.json").read_text())
    for key in ("preset", "seed", "package_version", "command", "best_steering_layer", "model"):
        assert prov.get(key) is not None, key
    assert prov["layer_convention"] == LAYER_CONVENTION
    assert 0 < src.best_layer < src.vectors.n_layers
    assert sum(f.stat().st_size for f in SHIPPED_DIR.rglob("*") if f.is_file()) < 600_000


@pytest.mark.integration
def test_shipped_vectors_fit_the_default_model(default_model):
    model, tok = default_model
    src = load_shipped()
    src.vectors.check_model(model)
    src.control.check_model(model)
    assert src.provenance["model"] == model_info(model).model_id
    service = DemoService(model, tok, src)
    assert service.default_layer == src.best_layer


def test_ship_from_run_round_trip(lm, tmp_path):
    from welfare_axis.demo.shipped import ship_from_run

    model, _ = lm
    n, h = model.config.num_hidden_layers, model.config.hidden_size
    run = tmp_path / "run"
    for d in ("extract_trained", "extract_naive"):
        ConceptVectors({k: torch.randn(n, h) for k in ("mold", "gold")}, meta={"model": {"model_id": "tiny"}}).save(run / d)
    (run / "analyze").mkdir()
    (run / "analyze" / "layer_choice.json").write_text(json.dumps({"mold": 2, "gold": 1}))
    (run / "steer_naive").mkdir()
    (run / "steer_naive" / "sentiment_claim.json").write_text(json.dumps({"layer": 3, "unit_ratio": 0.1}))
    (run / "run_config.json").write_text(json.dumps({"seed": 0, "package_version": "0.1.0", "preset": "smoke", "config": {"study": {"name": "smoke"}}}))
    out = ship_from_run(run, tmp_path / "shipped")
    src = load_shipped(out)
    assert src.best_layer == 3 and src.layer_choice == {"mold": 2, "gold": 1}
    assert src.provenance["preset"] == "smoke" and "--ship-from" in src.provenance["command"]
    assert torch.allclose(src.vectors.get("mold"), ConceptVectors.load(run / "extract_trained").get("mold"), rtol=1e-3, atol=1e-3)
