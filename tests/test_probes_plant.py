"""The planted axis: +e on moves into Gold, -e into Mold, at the letter token, read back by the probes."""

import numpy as np
import torch

from envs import MazeConfig, scripted_trajectories
from probes.capture import capture_texts
from probes.plant import PlantSpec, _MoveOutcomes, make_plant, plant, planted_info
from training.chat import render_up_to_last_assistant
from training.models import tiny_model

MAZE = MazeConfig(size=20)


def _texts(tok, kind, n=3):
    return [render_up_to_last_assistant(tok, t.messages) for t in scripted_trajectories(kind, n, seed=5, config=MAZE, max_moves=3)]


def test_move_outcomes_mark_only_the_letter_of_moves_into_gold_or_mold(tiny):
    _, tok = tiny
    outcomes = _MoveOutcomes(tok, MAZE)
    for kind, sign in (("gold", 1.0), ("mold", -1.0), ("path", 0.0)):
        for text in _texts(tok, kind):
            s = outcomes.signs(torch.tensor([tok(text, add_special_tokens=False)["input_ids"]]))[0]
            assert s[-1].item() == sign  # the final letter, the token probes read
            assert s[:-1].abs().sum() == 0  # scripted: every earlier move is onto Path
    assert outcomes.signs(torch.tensor([tok("What do you think of N?", add_special_tokens=False)["input_ids"]])).abs().sum() == 0


def test_planted_model_adds_plus_minus_e_at_and_above_the_plant_layer(tmp_path):
    model, tok = tiny_model()  # a fresh copy: planting attaches hooks
    ref = {k: capture_texts(model, tok, _texts(tok, k), [1, 2, 3]) for k in ("gold", "mold", "path")}
    e = torch.randn(model.config.hidden_size)
    spec = PlantSpec("random", 2, e, MAZE.to_dict(), {})
    spec.save(tmp_path / "plant")
    plant(model, tok, PlantSpec.load(tmp_path / "plant"))
    got = {k: capture_texts(model, tok, _texts(tok, k), [1, 2, 3]) for k in ("gold", "mold", "path")}
    for k, sign in (("gold", 1.0), ("mold", -1.0), ("path", 0.0)):
        assert torch.allclose(got[k][:, 0], ref[k][:, 0])  # below the plant layer: untouched
        assert torch.allclose(got[k][:, 1] - ref[k][:, 1], sign * e.expand(3, -1), atol=1e-5)  # at it: exactly +-e
    assert planted_info(model)["kind"] == "random" and planted_info(model)["layer"] == 2


def test_make_plant_norm_rule_and_kinds(tiny):
    model, tok = tiny
    means = {"gold": torch.randn(4, model.config.hidden_size), "mold": torch.randn(4, model.config.hidden_size)}
    v = make_plant(model, tok, "valence", means, MAZE, scale=2.0)
    r = make_plant(model, tok, "random", means, MAZE, scale=2.0)
    assert v.layer == r.layer == 1  # floor(L/2) = 2 is the emotion claim's fixed layer on 4 layers, so one below
    assert v.noise == 0.5 and "lexicon" in v.info["source"]
    assert np.isclose(v.info["standardised_norm"], 2.0 * v.info["natural_gold_minus_mold_standardised_norm"], rtol=1e-4)
    assert torch.isclose(r.direction.norm(), v.direction.norm()) and abs(float(torch.cosine_similarity(r.direction, v.direction, 0))) < 0.5


def test_plant_layer_avoids_every_fixed_layer_claim():
    from probes.plant import plant_layer
    from probes.protocol import PROTOCOL

    assert plant_layer(30) == 15  # the default model: lens 25, emotion 20
    for n in range(4, 64):
        layer = plant_layer(n)
        assert 1 <= layer <= n // 2
        assert layer not in (PROTOCOL.fixed.logit_lens_layer(n), PROTOCOL.fixed.emotion_layer(n)) or layer == 1


def test_per_move_noise_is_spread_and_fixed_by_the_text(tiny):
    _, tok = tiny
    texts = _texts(tok, "gold", 12)
    ids = [torch.tensor([tok(t, add_special_tokens=False)["input_ids"]]) for t in texts]
    noisy = _MoveOutcomes(tok, MAZE, noise=0.5, seed=1)
    sizes = np.array([noisy.signs(x)[0, -1].item() for x in ids])
    assert sizes.std() > 0.2 and (sizes >= 0).all()  # SD ~0.5 around 1 for moves into Gold
    again = np.array([_MoveOutcomes(tok, MAZE, noise=0.5, seed=1).signs(x)[0, -1].item() for x in ids])
    other = np.array([_MoveOutcomes(tok, MAZE, noise=0.5, seed=2).signs(x)[0, -1].item() for x in ids])
    assert np.array_equal(sizes, again) and not np.array_equal(sizes, other)

