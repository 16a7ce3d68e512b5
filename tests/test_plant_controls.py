"""The pipeline's positive and negative controls on the tiny model: `reproduce --plant valence|random`.

A random 4-layer model has no valence of its own, so these runs use small stories whose
valence is carried by shared words (tests/data/lexical_stories.json): there the tiny model's
story activations do have a valence axis, which the valence plant writes into the maze
letters. Claim 5's positive control (that valence direction) moves the tiny model's
teacher-forced sentiment log-odds beyond every null family, so its verdict is measured.
"""

import json
from pathlib import Path

import pytest

from welfare_axis.cli import main

STORIES = str(Path(__file__).parent / "data" / "lexical_stories.json")


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    out = {}
    for kind in ("valence", "random"):
        run = tmp_path_factory.mktemp(kind)
        assert main(["reproduce", "--preset", "smoke", "--plant", kind, "--stories", STORIES, "--out", str(run), "--no-progress"]) == 0
        out[kind] = (run, {c["id"]: c for c in json.loads((run / "report" / "claims.json").read_text())["claims"]})
    return out


def test_planted_valence_axis_is_seen(planted):
    run, c = planted["valence"]
    assert [c[i]["verdict"] for i in (1, 3, 4)] == ["reproduced"] * 3, {i: c[i]["measured"] for i in c}
    axis = json.loads((run / "steer_naive" / "axis_claim.json").read_text())
    # the lexical stories give the tiny model a valence direction that moves its sentiment log-odds beyond every null family
    assert all(f["p"] < 0.05 and f["draws"] == 200 for f in axis["valence"]["nulls"].values()), axis["valence"]["nulls"]
    assert not (run / "train_rl").exists() and (run / "plant" / "plant.json").exists()
    assert not (run / "mechanics").exists()  # no training to dissect: the report says so
    assert "Not measured: a planted axis has no training to dissect." in (run / "report" / "report.md").read_text()
    meta = json.loads((run / "extract_trained" / "meta.json").read_text())
    assert meta["model"]["plant"]["kind"] == "valence" and meta["model"]["plant"]["stories_half"] == "a"
    summary = json.loads((run / "analyze" / "summary.json").read_text())
    assert summary["emotion"]["story_half"] == "b"  # claim 3 is read on the stories that did not make the plant


def test_planted_random_axis_is_not_a_valence_axis(planted):
    _, c = planted["random"]
    assert c[3]["verdict"] == "not reproduced", c[3]["measured"]
    assert c[5]["verdict"] != "reproduced"
    # a planted random axis is still an axis: antiparallel and tracking, as it should be
    assert c[1]["verdict"] == c[4]["verdict"] == "reproduced"
