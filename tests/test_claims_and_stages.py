import json

import pandas as pd

from welfare_axis import claims
from welfare_axis.document import Figure, Heading, Para, Table, to_html, to_markdown
from welfare_axis.stages import StageRunner


def _fams(**p):
    return {f: dict(p) for f in ("shuffled", "covariance", "isotropic")}


def test_verdicts_beat_their_controls_not_zero():
    R, N, M = claims.REPRODUCED, claims.NOT_REPRODUCED, claims.NOT_MEASURED
    # 1: held-out half, every null family through the same layer pick, the naive model at that layer
    c1 = {"cos_half_b": -0.9, "naive_at_layer": -0.3, "nulls": _fams(p=0.01)}
    assert claims.verdict_antiparallel(c1) == R
    assert claims.verdict_antiparallel({**c1, "naive_at_layer": -0.8}) == N  # the naive model is just as antiparallel
    assert claims.verdict_antiparallel({**c1, "nulls": {**c1["nulls"], "covariance": {"p": 0.2}}}) == N  # one family is as extreme
    assert claims.verdict_antiparallel({**c1, "cos_half_b": -0.4}) == N
    assert claims.verdict_antiparallel({**c1, "nulls": {"shuffled": {"p": 0.01}}}) == M  # a family missing: not measured
    assert claims.verdict_antiparallel({**c1, "cos_half_b": float("nan")}) == M
    # 2: failure scores against u_* and every null family
    c2 = {"v_mold": 0.8, "u_mold": 0.5, "v_gold": 0.2, "u_gold": 0.5, "nulls": _fams(p_mold=0.01, p_gold=0.02)}
    assert claims.verdict_logit_lens(c2) == R
    assert claims.verdict_logit_lens({**c2, "u_mold": 0.85}) == N  # u_Mold does it too
    assert claims.verdict_logit_lens({**c2, "nulls": _fams(p_mold=0.01, p_gold=0.3)}) == N  # v_Gold within the nulls
    # 3: slope, valence r with CI, null pairs and the naive model
    c3 = {"slope": -0.9, "valence_slope": 0.3, "valence_r_ci": [0.4, 0.9], "naive_valence_slope": 0.02, "nulls": _fams(p=0.01)}
    assert claims.verdict_emotion(c3) == R
    assert claims.verdict_emotion({**c3, "nulls": _fams(p=0.2)}) == N  # null pairs do as well
    assert claims.verdict_emotion({**c3, "valence_r_ci": [-0.1, 0.9]}) == N  # CI includes 0
    assert claims.verdict_emotion({**c3, "naive_valence_slope": 0.4}) == N  # the naive u_* as aligned
    assert claims.verdict_emotion({**c3, "slope": 0.2}) == N
    # 4: intervals: the trained CI above 1, the naive CI below 0.5, both vectors
    c4 = {"trained_d_gold_ci": [1.2, 2.0], "trained_d_mold_ci": [1.1, 1.9], "naive_d_gold_ci": [-0.2, 0.3], "naive_d_mold_ci": [-0.3, 0.4]}
    assert claims.verdict_tracking(c4) == R
    assert claims.verdict_tracking({**c4, "trained_d_mold_ci": [0.9, 1.9]}) == N  # the CI reaches below 1
    assert claims.verdict_tracking({**c4, "naive_d_gold_ci": [0.1, 0.6]}) == N  # the naive model may track as well
    assert claims.verdict_tracking({**c4, "naive_d_mold_ci": [-0.9, -0.2]}) == N  # or track the other way: not "none before"
    assert claims.verdict_tracking({}) == M
    # 5: the axis clears every family (and all of them at its selected layer) and the finite-alpha CI is above 0,
    # only if the positive control clears them the same way
    ok = {"nulls": _fams(p=0.01), "clears_at_layer": True}
    s = {"axis": ok, "valence": ok, "confirm": {"ci": [0.1, 0.5]}}
    assert claims.verdict_steering(s) == R
    assert claims.verdict_steering({**s, "axis": {**ok, "nulls": {**_fams(p=0.01), "covariance": {"p": 0.3}}}}) == N
    assert claims.verdict_steering({**s, "axis": {**ok, "clears_at_layer": False}}) == N  # no single layer beats every family
    assert claims.verdict_steering({**s, "confirm": {"ci": [-0.1, 0.5]}}) == N  # the finite step does not confirm it
    assert claims.verdict_steering({"axis": {**ok, "clears_at_layer": False}, "valence": ok}) == N  # decided without the step
    assert claims.verdict_steering({**s, "valence": {"nulls": _fams(p=0.4), "clears_at_layer": False}}) == M  # positive control failed
    assert claims.verdict_steering(None) == M


def test_evaluate_reads_a_summary_and_states_every_threshold():
    results = claims.evaluate({}, None)
    assert [r.id for r in results] == [1, 2, 3, 4, 5, "5b", "5c", "5d", 6] and all(r.verdict == claims.NOT_MEASURED for r in results)
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


def test_seeds_table_counts_confirmatory_agreement_and_refuses_mixed_protocols(tmp_path):
    import pytest

    from welfare_axis.report import seeds_table_markdown

    def write(name, seed, status, verdicts, protocol="abc"):
        d = tmp_path / name / "report"
        d.mkdir(parents=True)
        claims_ = [{"id": i + 1, "claim": f"claim {i + 1}", "verdict": v, "value": 0.5} for i, v in enumerate(verdicts)]
        (d / "claims.json").write_text(json.dumps({"protocol": {"hash": protocol}, "seed": seed, "status": status, "claims": claims_}))
        return tmp_path / name

    runs = [write("s0", 0, "exploratory", ["reproduced", "reproduced"]), write("s1", 1, "confirmatory", ["reproduced", "not reproduced"]),
            write("s2", 2, "confirmatory", ["reproduced", "reproduced"])]
    rows = seeds_table_markdown(runs).splitlines()
    assert rows[0] == "| claim | seed 0 (exploratory) | seed 1 (confirmatory) | seed 2 (confirmatory) | confirmatory runs reproducing |"
    assert rows[2].endswith("| 2 of 2 |") and rows[3].endswith("| 1 of 2 |")  # the exploratory seed does not count
    with pytest.raises(ValueError, match="different protocols"):
        seeds_table_markdown(runs + [write("s3", 3, "confirmatory", ["reproduced", "reproduced"], protocol="other")])
