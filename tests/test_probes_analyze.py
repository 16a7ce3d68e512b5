"""End-to-end `extract` + `analyze` on the tiny model with small in-test emotion data; the CLI."""

import json

import numpy as np
import pandas as pd
import pytest

from envs import MazeConfig
from probes import ConceptVectors
from probes.analyze import logit_lens, readable_token, run_analyses
from probes.extract import extract_vectors
from probes.metrics import cosine_per_layer
from training.models import load_model
from welfare_axis.cli import main

STORIES = {
    "emotions": {
        "joyful": {"valence": 0.9, "arousal": 0.6, "stories": ["She laughed and danced in the sun.", "The whole family sang together at dinner."]},
        "proud": {"valence": 0.7, "arousal": 0.5, "stories": ["He held up the trophy he had trained for.", "Her first book sat in the shop window."]},
        "ashamed": {"valence": -0.7, "arousal": 0.4, "stories": ["He was caught copying the test.", "She had lied and everyone knew it now."]},
        "sad": {"valence": -0.8, "arousal": -0.4, "stories": ["The old dog did not come home.", "The letter said the shop would close for good."]},
    }
}
NEUTRAL = {"texts": ["The bus leaves at nine.", "Water boils at one hundred degrees.", "The table has four legs.", "Paper is made from wood."]}


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    root = tmp_path_factory.mktemp("analyze")
    model, tok = load_model("tiny")
    extract_vectors(model, tok, 8, seed=1, maze_config=MazeConfig(size=20), batch_size=8, progress=False, max_moves=2, out_dir=root / "v")
    (root / "stories.json").write_text(json.dumps(STORIES))
    (root / "neutral.json").write_text(json.dumps(NEUTRAL))
    summary = run_analyses(
        root / "v", root / "a", control_dir=root / "v", seed=0, n_tracking=6, progress=False,
        stories=str(root / "stories.json"), neutral=str(root / "neutral.json"), top_k=5, null_draws=50,
    )
    return root, summary


def test_summary_keys_and_values(analysed):
    root, s = analysed
    cv = ConceptVectors.load(root / "v")
    n = cv.n_layers
    assert s["n_layers"] == n == 4 and "block_output" in s["layer_convention"]
    assert set(s["l_star"]) == {"mold", "gold", "path"} and all(0 <= v < n for v in s["l_star"].values())
    expected = cosine_per_layer(cv.get("mold").numpy(), cv.get("gold").numpy())
    np.testing.assert_allclose(s["cos_mold_gold"]["per_layer"], expected, atol=1e-6)
    assert s["cos_mold_gold"]["min"] == pytest.approx(expected.min()) and s["cos_mold_gold"]["argmin"] == int(expected.argmin())
    assert s["control_cos_mold_gold"]["per_layer"] == s["cos_mold_gold"]["per_layer"]  # control = same folder here
    cosines = pd.read_parquet(root / "a" / "cosines.parquet")
    np.testing.assert_allclose(cosines.cos_from_norms, expected, atol=1e-5)  # balanced classes: v_m + v_g + v_p = 0
    assert all(lo <= hi for lo, hi in zip(s["perm_null_band"]["lo"], s["perm_null_band"]["hi"]))
    assert len(s["null_band"]["lo"]) == n and all(lo < hi for lo, hi in zip(s["null_band"]["lo"], s["null_band"]["hi"]))
    assert s["tile_mean_cos_layer"] == 2 and s["tile_mean_cos"]["mold"]["mold"] == pytest.approx(1.0)
    assert s["logit_lens"]["layer"] == 3 and len(s["logit_lens"]["mold"]["promoted"]) == 5
    e = s["emotion"]
    assert e["layer"] == 2 and e["n_emotions"] == 4 and np.isfinite(e["slope"]) and -1 <= e["r"] <= 1
    assert e["slope_expected_by_chance"] == pytest.approx(expected[2])
    assert e["control"] is not None and set(e["gold_pole"]) <= set(STORIES["emotions"])
    t = s["tracking"]
    assert np.isfinite(t["d_gold"]) and np.isfinite(t["control_d_gold"])
    # naive model == trained model and u == v here, so the control d equals the trained d
    assert t["control_d_gold"] == pytest.approx(t["d_gold"]) and t["naive_acts_on_v_d_mold"] == pytest.approx(t["d_mold"])
    assert len(s["probe_cosine"]["gold"]) == n and all(-1 <= c <= 1 for c in s["probe_cosine"]["gold"])


def test_output_files(analysed):
    root, s = analysed
    out = root / "a"
    assert json.loads((out / "layer_choice.json").read_text())["gold"] == s["l_star"]["gold"]
    assert json.loads((out / "summary.json").read_text())["l_star"] == s["l_star"]
    metrics = pd.read_parquet(out / "layer_metrics.parquet")
    assert set(metrics.columns) >= {"layer", "vector", "auroc", "abs_d", "overlap", "probe_auroc", "probe_cos"} and len(metrics) == 12
    assert len(pd.read_parquet(out / "cosines.parquet")) == 4
    emo = pd.read_parquet(out / "emotions.parquet")
    assert set(emo.model) == {"trained", "naive"} and set(emo.emotion) == set(STORIES["emotions"])
    track = pd.read_parquet(out / "tracking.parquet")
    assert set(track.final) == {"gold", "mold"} and (track[track.model == "trained"].groupby("vector").size() == 12).all()
    assert set(pd.read_parquet(out / "logit_lens.parquet").side) == {"promoted", "suppressed"}
    for png in ("cosine_by_layer.png", "emotion_scatter.png", "tracking_hist.png", "layer_metrics.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_logit_lens_ranks_unembedding_rows(tiny):
    import torch

    model, tok = tiny
    w = model.get_output_embeddings().weight.detach()
    v = w[42] / model.model.norm.weight.detach()  # after the gain, v is exactly row 42
    res = logit_lens(model, tok, v, k=3)
    assert res["promoted"][0] == readable_token(tok, 42)
    assert res["promoted_logits"][0] == pytest.approx(float((w[42] * w[42]).sum()), rel=1e-4)
    assert res["suppressed_logits"][0] == pytest.approx(float(torch.min(w @ w[42])), rel=1e-4)


def test_cli_extract_and_errors(tmp_path, capsys):
    assert main(["extract", "--model", "tiny", "-n", "3", "--max-moves", "1", "--size", "20", "--out", str(tmp_path / "v"), "--no-progress"]) == 0
    assert (tmp_path / "v" / "vectors.safetensors").exists() and (tmp_path / "v" / "activations.npy").exists()
    assert main(["extract", "--model", "tiny", "-n", "1", "--out", str(tmp_path / "x")]) == 2
    assert main(["analyze", "--vectors", str(tmp_path / "missing"), "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "-n must be at least 2" in err and "run 'welfare-axis extract" in err
    with pytest.raises(SystemExit) as e:
        main(["analyze", "--help"])
    assert e.value.code == 0
