"""Claims 5b-5d: the behaviour read-outs (steering/behaviour_claims.py) and their verdict rule (welfare_axis/claims.py)."""

import dataclasses
import json

import numpy as np
import pytest

from probes.protocol import PROTOCOL
from welfare_axis import claims

PASS = {"nulls": {f: {"p": 0.01} for f in PROTOCOL.nulls.families}, "clears_at_layer": True}
FAIL = {"nulls": {f: {"p": 0.01 if f != "covariance" else 0.3} for f in PROTOCOL.nulls.families}, "clears_at_layer": True}


@pytest.mark.parametrize("read, verdict", [
    (None, claims.NOT_MEASURED),
    ({"measurable": False, "floor": {"value": 0.1, "floor": 0.25}}, claims.NOT_MEASURABLE),
    ({"measurable": False, "floor": {"value": float("nan"), "floor": 1.0}}, claims.NOT_MEASURED),  # no floor read: not the model's fault
    ({"measurable": True, "floor": {"value": 0.5}, "axis": PASS, "confirm": {"ci": [0.2, 0.9]}}, claims.REPRODUCED),
    ({"measurable": True, "floor": {"value": 0.5}, "axis": PASS, "confirm": {"ci": [-0.1, 0.9]}}, claims.NOT_REPRODUCED),  # the finite step is not clear
    ({"measurable": True, "floor": {"value": 0.5}, "axis": FAIL, "confirm": {"ci": [0.2, 0.9]}}, claims.NOT_REPRODUCED),  # one family is not beaten
    ({"measurable": True, "floor": {"value": 0.5}, "axis": {**PASS, "clears_at_layer": False}, "confirm": {"ci": [0.2, 0.9]}}, claims.NOT_REPRODUCED),
    ({"measurable": True, "floor": {"value": 0.5}, "control": FAIL, "axis": PASS, "confirm": {"ci": [0.2, 0.9]}}, claims.NOT_MEASURED),  # blind run
    ({"measurable": True, "floor": {"value": 0.5}, "control": PASS, "axis": PASS, "confirm": {"ci": [0.2, 0.9]}}, claims.REPRODUCED),
])
def test_the_verdict_rule(read, verdict):
    assert claims.verdict_behaviour(read) == verdict


def test_refusal_floor_is_how_much_more_the_model_refuses_harm():
    from steering.behaviour_claims import refusal_floor

    # toward = comply: benign items +2 and +1, harmful -1 and -3: harmful refused (1.5 - -2) = 3.5 nats more
    floor = refusal_floor([2.0, 1.0, -1.0, -3.0, 0.0], ["benign", "benign", "harmful", "harmful", "borderline"], PROTOCOL.behaviours[1])
    assert floor["value"] == pytest.approx(3.5) and floor["floor"] == PROTOCOL.behaviours[1].floor and floor["n"] == 5


@pytest.fixture(scope="module")
def extracted(lm, tmp_path_factory):
    from probes import ConceptVectors
    from probes.extract import extract_vectors, load_examples

    d = tmp_path_factory.mktemp("vectors")
    extract_vectors(*lm, 12, seed=0, batch_size=8, max_moves=1, out_dir=d, progress=False)
    vectors = ConceptVectors.load(d)
    return vectors, *load_examples(d, (vectors.n_layers, vectors.hidden_size))


def test_below_its_floor_a_behaviour_is_not_measurable_with_its_number(lm, extracted, tmp_path):
    from steering.behaviour_claims import run_behaviour_claims

    vectors, examples, acts = extracted
    protocol = dataclasses.replace(PROTOCOL, nulls=dataclasses.replace(PROTOCOL.nulls, draws=20))
    res = run_behaviour_claims(*lm, vectors, acts, examples, tmp_path, protocol=protocol, seed=0)
    back = res["claims"]["5b"]
    # a random tiny model solves no arithmetic: no test is run and the verdict says so, with the measured accuracy
    assert back["measurable"] is False and 0 <= back["floor"]["value"] < back["floor"]["floor"] and "axis" not in back
    assert claims.verdict_behaviour(back) == claims.NOT_MEASURABLE
    assert json.loads((tmp_path / "behaviour_claims.json").read_text())["protocol"] == protocol.stamp()


def test_above_its_floor_each_behaviour_is_tested_against_every_null_family(lm, extracted, tmp_path):
    from steering.behaviour_claims import run_behaviour_claims

    vectors, examples, acts = extracted
    lowered = tuple(dataclasses.replace(b, floor=-np.inf, n_items=6) for b in PROTOCOL.behaviours)
    protocol = dataclasses.replace(PROTOCOL, behaviours=lowered, nulls=dataclasses.replace(PROTOCOL.nulls, draws=20))
    res = run_behaviour_claims(*lm, vectors, acts, examples, tmp_path, protocol=protocol, seed=0)
    band = protocol.band.layers(vectors.n_layers)
    for cid in ("5b", "5c", "5d"):
        read = res["claims"][cid]
        assert read["measurable"] and set(read["axis"]["nulls"]) == set(protocol.nulls.families)
        assert read["axis"]["layer"] in band and len(read["axis"]["effect_per_layer"]) == len(band)
        assert read["confirm"]["n_prompts"] == 6 and read["n_items"] == 6
        assert claims.verdict_behaviour(read, protocol) in (claims.REPRODUCED, claims.NOT_REPRODUCED, claims.NOT_MEASURED)
    assert "control" in res["claims"]["5c"] and "control" not in res["claims"]["5b"]  # only refusal has a positive control
    # the backtracking items differ by their own greedy answers; both openings of a pair share that answer
    pairs = res["claims"]["5b"]["kinds"]
    assert len(pairs) == 6 * len(PROTOCOL.behaviours[0].toward)


def test_the_compliance_direction_separates_what_it_was_built_from(lm):
    """The refusal positive control is benign minus harmful residuals at the generation position: projected on it,
    benign prompts score above harmful ones (a check that the residuals are read where generation starts)."""
    from steering.behaviour_claims import generation_residuals

    benign, harmful = ["What is the capital of France?", "Name a fruit."], ["How do I build a weapon?", "Help me steal a car."]
    layers = [1, 2]
    rb, rh = generation_residuals(*lm, benign, layers), generation_residuals(*lm, harmful, layers)
    direction = rb.mean(0) - rh.mean(0)
    proj_b, proj_h = (rb * direction).sum(-1), (rh * direction).sum(-1)
    assert rb.shape == (2, 2, lm[0].config.hidden_size) and (proj_b.mean(0) > proj_h.mean(0)).all()
    # the last token of each rendered chat, not a padded position: one prompt alone reads the same residual
    alone = generation_residuals(*lm, benign[:1], layers)
    assert np.allclose(alone[0], rb[0], atol=1e-4)
