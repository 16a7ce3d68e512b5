import json

import pandas as pd

from welfare_axis import claims
from welfare_axis.document import Figure, Heading, Para, Table, to_html, to_markdown
from welfare_axis.stages import StageRunner


def test_verdicts_beat_their_controls_not_zero():
    R, N, M = claims.REPRODUCED, claims.NOT_REPRODUCED, claims.NOT_MEASURED
    # 1: held-out half, shuffled-label band and the naive model at the same layer
    assert claims.verdict_antiparallel(-0.9, -0.6, -0.3) == R
    assert claims.verdict_antiparallel(-0.9, -0.6, -0.8) == N  # the naive model is just as antiparallel
    assert claims.verdict_antiparallel(-0.9, -0.98, -0.3) == N  # inside the shuffled-label band
    assert claims.verdict_antiparallel(-0.4, -0.3, 0.0) == N
    assert claims.verdict_antiparallel(float("nan"), -0.5, -0.1) == M
    # 2: failure scores against u_* and random directions
    assert claims.verdict_logit_lens(0.8, 0.5, 0.2, 0.5, 0.3, 0.7) == R
    assert claims.verdict_logit_lens(0.8, 0.85, 0.2, 0.5, 0.3, 0.7) == N  # u_Mold does it too
    assert claims.verdict_logit_lens(0.65, 0.5, 0.2, 0.5, 0.3, 0.7) == N  # within the random band
    # 3: slope, valence r with CI, random-pair null and the naive model
    assert claims.verdict_emotion(-0.9, 0.8, 0.4, 0.6, 0.1) == R
    assert claims.verdict_emotion(-0.9, 0.8, 0.4, 0.85, 0.1) == N  # random pairs do as well
    assert claims.verdict_emotion(-0.9, 0.8, -0.1, 0.6, 0.1) == N  # CI includes 0
    assert claims.verdict_emotion(-0.9, 0.8, 0.4, 0.6, 0.9) == N  # the naive u_* as aligned
    assert claims.verdict_emotion(0.2, 0.8, 0.4, 0.6, 0.1) == N
    # 4: signed d in the expected direction
    assert claims.verdict_tracking(1.7, 1.8, 0.1, 0.05) == R
    assert claims.verdict_tracking(1.7, -1.8, 0.1, 0.05) == N  # v_Mold tracks the wrong way
    assert claims.verdict_tracking(1.7, 1.8, 1.5, 0.05) == N
    assert claims.verdict_tracking(0.5, 1.8, 0.0, 0.0) == N
    # 5: beats u_* and random directions with paired CIs, and only if the positive control worked
    s = {"v_mold": -0.5, "u_mold": 0.0, "v_gold": 0.5, "u_gold": 0.0, "random_lo": -0.2, "random_hi": 0.2,
         "diff_mold_hi": -0.1, "diff_gold_lo": 0.1, "valence": 0.6}
    assert claims.verdict_steering(s) == R
    assert claims.verdict_steering({**s, "v_mold": -0.1}) == N  # inside the random band
    assert claims.verdict_steering({**s, "diff_gold_lo": -0.1}) == N  # paired CI includes 0
    assert claims.verdict_steering({**s, "valence": 0.1}) == M  # positive control failed: could not have seen it
    assert claims.verdict_steering(None) == M


def test_evaluate_reads_a_summary_and_states_every_threshold():
    results = claims.evaluate({}, None)
    assert [r.id for r in results] == [1, 2, 3, 4, 5, 6] and all(r.verdict == claims.NOT_MEASURED for r in results)
    assert all(r.threshold for r in results) and results[0].to_dict()["claim"].startswith("v_Mold")


def test_stage_runner_caches_resumes_and_forces(tmp_path):
    calls = []

    def make(name):
        def fn(folder):
            calls.append(name)
            (folder / "out.txt").write_text(name)
            return {"value": len(calls)}

        return fn

    def run(force=()):
        r = StageRunner(tmp_path, {"a": 1, "b": 1}, force=set(force), progress=False)
        r.run("a", {"x": 1}, make("a"))
        r.run("b", {"y": 2}, make("b"), deps=("a",))
        r.close()
        return r

    run()
    assert calls == ["a", "b"]
    r = run()
    assert calls == ["a", "b"] and r.records["a"].skipped and r.records["b"].skipped
    # An interrupted stage (no marker) runs again; finished ones are kept.
    (tmp_path / "b" / "stage.json").unlink()
    run()
    assert calls == ["a", "b", "b"]
    # Forcing a stage redoes it and what depends on it.
    run(force=["a"])
    assert calls == ["a", "b", "b", "a", "b"]
    marker = json.loads((tmp_path / "a" / "stage.json").read_text())
    assert marker["key"] and marker["package_version"] and "wall_time" in marker


def test_document_renders_markdown_and_self_contained_html(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig_path = tmp_path / "f.png"
    plt.figure()
    plt.plot([0, 1])
    plt.savefig(fig_path)
    plt.close()
    blocks = [Heading("Title", 1), Para("some **bold** `code`"), Table(pd.DataFrame({"a": [1.23456, float("nan")], "b": ["x|y", None]})), Figure(fig_path, "a line")]
    md = to_markdown(blocks, tmp_path)
    assert "# Title" in md and "| a | b |" in md and "x\\|y" in md and "![a line](f.png)" in md and "—" in md
    page = to_html(blocks, "t")
    assert "<strong>bold</strong>" in page and "data:image/png;base64," in page and "<table>" in page


def test_report_names_the_trained_blocks_and_warns_when_lower_ones_are_frozen():
    from welfare_axis.report import _trained_blocks

    assert _trained_blocks({"finetune": "lora", "lora_top_layers": 0}, 30) == ("all 30", "")
    assert _trained_blocks({"finetune": "full", "lora_top_layers": 6}, 30) == ("all 30", "")
    blocks, caveat = _trained_blocks({"finetune": "lora", "lora_top_layers": 6}, 30)
    assert blocks.startswith("24..29") and "below 24" in caveat and "v_* = u_*" in caveat
    # A full-fine-tune SFT before LoRA RL changed every block; a LoRA SFT alone only the top ones.
    assert _trained_blocks({"finetune": "lora", "sft_finetune": "full", "lora_top_layers": 6}, 30, "sft+rl") == ("all 30", "")
    assert _trained_blocks({"finetune": "full", "sft_finetune": "lora", "lora_top_layers": 6}, 30, "sft")[0].startswith("24..29")


def test_vectors_below_the_reliability_target_caveat_the_vector_claims():
    rel = {"space": "whitened", "target": 0.9, "below_target": ["v_mold"],
           "vectors": {"v_mold": {"layer": 16, "split_half_cos": 0.66, "n_per_class": 300, "n_per_class_for_target": 1391},
                       "v_gold": {"layer": 14, "split_half_cos": 0.95, "n_per_class": 300, "n_per_class_for_target": 142}}}
    results = {r.id: r for r in claims.evaluate({"reliability_at_l_star": rel}, None)}
    assert "v_mold 0.66 at layer 16" in results[1].caveat and "~1391" in results[4].caveat
    assert "v_gold" not in results[1].caveat and results[2].caveat == results[5].caveat == ""
    assert claims.evaluate({"reliability_at_l_star": {**rel, "below_target": []}}, None)[0].caveat == ""
