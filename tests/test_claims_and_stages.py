import json

import pandas as pd

from welfare_axis import claims
from welfare_axis.document import Figure, Heading, Para, Table, to_html, to_markdown
from welfare_axis.stages import StageRunner


def test_verdicts_follow_the_stated_thresholds():
    assert claims.verdict_antiparallel(-0.9, -0.2) == claims.REPRODUCED
    assert claims.verdict_antiparallel(-0.4, 0.0) == claims.NOT_REPRODUCED
    assert claims.verdict_antiparallel(-0.9, -0.8) == claims.NOT_REPRODUCED  # control just as antiparallel
    assert claims.verdict_antiparallel(float("nan"), -0.1) == claims.NOT_MEASURED
    assert claims.verdict_logit_lens(["Ġcannot", " impossible", "cat"], ["never", "No", "x"]) == claims.REPRODUCED
    assert claims.verdict_logit_lens(["cat", "dog"], ["never", "no"]) == claims.NOT_REPRODUCED
    assert claims.verdict_logit_lens(None, ["no"]) == claims.NOT_MEASURED
    assert claims.verdict_emotion(-0.9, -0.6, 0.7) == claims.REPRODUCED
    assert claims.verdict_emotion(-0.9, -0.85, 0.7) == claims.NOT_REPRODUCED  # no better than chance
    assert claims.verdict_emotion(-0.9, -0.6, 0.1) == claims.NOT_REPRODUCED  # not a valence axis
    assert claims.verdict_emotion(0.2, -0.6, 0.7) == claims.NOT_REPRODUCED
    frame = pd.DataFrame({"valence": [1, 0.5, -0.5, -1], "cos_gold": [0.2, 0.1, -0.1, -0.2], "cos_mold": [-0.2, -0.1, 0.1, 0.2]})
    assert claims.valence_alignment(frame) > 0.99
    assert claims.verdict_tracking(1.7, -1.8, 0.1, 0.05) == claims.REPRODUCED
    assert claims.verdict_tracking(1.7, 1.8, 1.5, 0.05) == claims.NOT_REPRODUCED
    assert claims.verdict_tracking(0.5, 1.8, 0.0, 0.0) == claims.NOT_REPRODUCED
    assert claims.verdict_steering({"ci_hi": -0.1}, {"ci_lo": 0.2}) == claims.REPRODUCED
    assert claims.verdict_steering({"ci_hi": 0.1}, {"ci_lo": 0.2}) == claims.NOT_REPRODUCED
    assert claims.verdict_steering(None, {"ci_lo": 0.2}) == claims.NOT_MEASURED
    assert claims.failure_token_count(["▁cannot", "Ġdoesn’t", "Ġdog"]) == 2


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
