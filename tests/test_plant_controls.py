"""The pipeline's positive and negative controls on the tiny model: `reproduce --plant valence|random`.

A random 4-layer model has no valence of its own, so these runs use small stories whose
valence is carried by shared words (tests/data/lexical_stories.json), some of them words of the
VADER lexicon: a trained model would carry valence from the lexicon to stories through meaning, the
tiny one only through shared tokens. The valence plant is made from the lexicon in another frame
("Here is a word: ..."), at a layer no fixed-layer claim reads, with per-move noise. Claim 5's positive control (that valence direction) moves the tiny model's
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
    assert [c[i]["verdict"] for i in (1, 4)] == ["reproduced"] * 2, {i: c[i]["measured"] for i in c}
    # the lexicon-made plant lines v_Gold - v_Mold up with the stories' valence (claim 3's r); whether the slope
    # also clears the nulls is the claim's power, which `welfare-axis calibrate` measures on the default model
    claim3 = json.loads((run / "analyze" / "summary.json").read_text())["verdict_inputs"]["claim3"]
    assert claim3["valence_r"] > 0.9 and claim3["valence_slope"] > 0 > claim3["naive_valence_slope"], claim3
    axis = json.loads((run / "steer_naive" / "axis_claim.json").read_text())
    # the lexical stories give the tiny model a valence direction that moves its sentiment log-odds beyond every null family
    assert all(f["p"] < 0.05 and f["draws"] == 200 for f in axis["valence"]["nulls"].values()), axis["valence"]["nulls"]
    assert not (run / "train_rl").exists() and (run / "plant" / "plant.json").exists()
    assert not (run / "mechanics").exists()  # no training to dissect: the report says so
    assert "Not measured: a planted axis has no training to dissect." in (run / "report" / "report.md").read_text()
    meta = json.loads((run / "extract_trained" / "meta.json").read_text())
    assert meta["model"]["plant"]["kind"] == "valence" and "lexicon" in meta["model"]["plant"]["source"]
    assert meta["model"]["plant"]["layer"] == 1 and meta["model"]["plant"]["noise"] == 0.5  # below both fixed layers (2, 3)


def test_planted_random_axis_is_not_a_valence_axis(planted):
    run, c = planted["random"]
    claim3 = json.loads((run / "analyze" / "summary.json").read_text())["verdict_inputs"]["claim3"]
    assert abs(claim3["valence_r"]) < 0.9, claim3
    assert c[3]["verdict"] == "not reproduced", c[3]["measured"]
    assert c[5]["verdict"] != "reproduced"
    # a planted random axis is still an axis: antiparallel and tracking, as it should be
    assert c[1]["verdict"] == c[4]["verdict"] == "reproduced"
