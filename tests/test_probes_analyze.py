"""End-to-end `extract` + `analyze` on the tiny model with small in-test emotion data; the CLI."""

import json

import numpy as np
import pandas as pd
import pytest

from envs import MazeConfig
from probes import ConceptVectors
from probes.analyze import run_analyses
from probes.extract import extract_vectors
from probes.metrics import cosine_per_layer
from probes.protocol import PROTOCOL
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
        root / "v", root / "a", control_dir=root / "v", seed=0, progress=False,
        stories=str(root / "stories.json"), neutral=str(root / "neutral.json"), top_k=5, null_draws=50,
    )
    return root, summary


def test_summary_keys_and_values(analysed):
    root, s = analysed
    cv = ConceptVectors.load(root / "v")
    n = cv.n_layers
    assert s["n_layers"] == n == 4 and "block_input" in s["layer_convention"] and s["verdict_space"] == "whitened"
    assert set(s["l_star"]) == {"mold", "gold", "path"} and all(0 <= v < n for v in s["l_star"].values())
    assert s["l_star"] == s["l_star_by_space"]["whitened"] and set(s["l_star_by_space"]) == {"raw", "standardised", "whitened"}
    raw = s["antiparallel"]["raw"]
    expected = cosine_per_layer(cv.get("mold").numpy(), cv.get("gold").numpy())
    np.testing.assert_allclose(raw["trained"]["per_layer"], expected, atol=1e-6)
    # layer 0 is the embedding of the final letter: balanced over directions, no class signal, v = 0
    assert np.allclose(cv.get("gold", 0).numpy(), 0, atol=1e-5) and np.isnan(expected[0])
    assert raw["trained"]["min"] == pytest.approx(np.nanmin(expected)) and raw["trained"]["argmin"] == int(np.nanargmin(expected))
    np.testing.assert_array_equal(raw["naive"]["per_layer"], raw["trained"]["per_layer"])  # control = same folder here
    std = s["antiparallel"]["standardised"]
    assert std["split"]["layer"] >= 1 and std["at_split_layer"]["trained_half_b"] == pytest.approx(std["split"]["per_layer_b"][std["split"]["layer"]])
    cosines = pd.read_parquet(root / "a" / "cosines.parquet")
    ok = np.isfinite(expected)
    np.testing.assert_allclose(cosines.cos_from_norms[ok], expected[ok], atol=1e-5)  # balanced classes: v_m + v_g + v_p = 0
    rel = s["split_half_reliability"]["gold"]
    assert len(rel["raw"]) == n and all(-1 <= c <= 1 for c in rel["standardised"][1:])
    ra = s["reliability_at_l_star"]
    vm = ra["vectors"]["v_mold"]
    assert vm["layer"] == s["l_star"]["mold"] and vm["n_per_class"] == 8 and ra["target"] == 0.9
    assert vm["split_half_cos"] == pytest.approx(s["split_half_reliability"]["mold"]["whitened"][vm["layer"]])
    assert ra["vectors"]["u_mold"]["split_half_cos"] == pytest.approx(vm["split_half_cos"])  # control = same folder here
    assert set(ra["below_target"]) == {n for n, r in ra["vectors"].items() if r["split_half_cos"] < 0.9}
    assert ra["n_splits"] == 20 and vm["split_half_min"] <= vm["split_half_cos"] <= vm["split_half_max"]
    shares = s["outlier_channels"]["top5_share"]["v_mold"]
    assert all(0 < x <= 1 for x in shares[1:]) and len(s["outlier_channels"]["top_channels_v_mold"][1]) == 5
    assert s["tile_mean_cos_layer"] == 2 and s["tile_mean_cos"]["mold"]["mold"] == pytest.approx(1.0)
    ll = s["logit_lens"]
    assert ll["layer"] == 3 and set(ll["at_layer"]) == {"v_mold", "v_gold", "u_mold", "u_gold"} and ll["random_lo"] < ll["random_hi"]
    e = s["emotion"]
    assert e["layer"] == 2 and e["n_emotions"] == 4 and e["emotion_model"].startswith("maze-naive")
    t = e["trained"]
    assert np.isfinite(t["slope"]) and -1 <= t["valence_r"] <= 1 and t["null"]["valence_r_lo"] <= t["null"]["valence_r_hi"]
    assert e["naive"]["slope"] == pytest.approx(t["slope"])  # u == v here
    tr = s["tracking"]["whitened"]
    assert np.isfinite(tr["trained_d_gold"]) and tr["naive_d_gold"] == pytest.approx(tr["trained_d_gold"])
    assert tr["naive_acts_on_v_d_mold"] == pytest.approx(tr["trained_d_mold"])


def test_output_files(analysed):
    root, s = analysed
    out = root / "a"
    choice = json.loads((out / "layer_choice.json").read_text())
    assert choice["gold"] == s["l_star"]["gold"] and choice["space"] == "whitened"
    assert json.loads((out / "summary.json").read_text())["l_star"] == s["l_star"]
    metrics = pd.read_parquet(out / "layer_metrics.parquet")
    assert set(metrics.columns) >= {"space", "layer", "vector", "auroc", "abs_d", "overlap", "probe_auroc", "split_half_cos", "top5_share"}
    assert len(metrics[metrics.model == "trained"]) == 3 * 4 * 3 and set(metrics.model) == {"trained", "naive"}
    assert len(pd.read_parquet(out / "cosines.parquet")) == 4
    emo = pd.read_parquet(out / "emotions.parquet")
    assert set(emo.model) == {"trained", "naive"} and set(emo.emotion) == set(STORIES["emotions"])
    track = pd.read_parquet(out / "tracking.parquet")
    assert set(track.final) == {"gold", "mold"} and set(track.space) == {"raw", "standardised", "whitened"}
    # paired tracking: one gold-final and one mold-final trajectory per maze state of the protocol
    assert (track[(track.model == "trained") & (track.space == "raw")].groupby("vector").size() == 2 * PROTOCOL.claim4.n_states).all()
    assert set(pd.read_parquet(out / "logit_lens.parquet").vector) == {"v_mold", "v_gold", "u_mold", "u_gold"}
    for png in ("cosine_by_layer.png", "emotion_scatter.png", "tracking_hist.png", "layer_metrics.png", "logit_lens.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


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
