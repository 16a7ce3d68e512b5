"""Claim 6 as a matrix: stages shared between variant runs, the table, and claim 6's verdict rule."""

import json
import os

import pytest

from probes.protocol import PROTOCOL
from welfare_axis import claims
from welfare_axis.stages import StageRunner

R, N = claims.REPRODUCED, claims.NOT_REPRODUCED


def _rows(**verdicts):
    return [{"id": int(k[1:]) if k[1:].isdigit() else k[1:], "verdict": v} for k, v in verdicts.items()]


def _matrix(**variants):
    return {name.replace("_", "-").replace("sft-rl", "sft+rl"): {"claims": rows, "learned": {"learned": True}}
            for name, rows in variants.items()}


@pytest.mark.parametrize("matrix, verdict", [
    (None, claims.NOT_MEASURED),
    # a required variant did not run
    (_matrix(sft_rl=_rows(c1=R), sft=_rows(c1=R), tile_swap=_rows(c1=R)), claims.NOT_MEASURED),
    # the reference reproduces nothing: nothing can survive
    (_matrix(sft_rl=_rows(c1=N), sft=_rows(c1=R), tile_swap=_rows(c1=R), other_algorithm=_rows(c1=R)), claims.NOT_MEASURED),
    (_matrix(sft_rl=_rows(c1=R, c5=N), sft=_rows(c1=R, c5=R), tile_swap=_rows(c1=R, c5=N), other_algorithm=_rows(c1=R, c5=N)), R),
    (_matrix(sft_rl=_rows(c1=R, c5=R), sft=_rows(c1=R, c5=R), tile_swap=_rows(c1=R, c5=N), other_algorithm=_rows(c1=R, c5=R)), N),
])
def test_claim_6_needs_every_reproduced_claim_to_survive_every_required_variant(matrix, verdict):
    got, survival = claims.verdict_robustness(matrix)
    assert got == verdict
    if verdict == N:
        assert (5, False) in survival and (1, True) in survival


def test_claim_6_is_not_measured_when_a_deciding_variant_did_not_learn():
    """Every reproduced claim survives, but the tile-swap model never learned its tiles: nothing about what training
    does was tested there, so claim 6 is not measured, and the claims row says which variant failed to learn."""
    matrix = _matrix(sft_rl=_rows(c1=R), sft=_rows(c1=R), tile_swap=_rows(c1=R), other_algorithm=_rows(c1=R))
    assert claims.verdict_robustness(matrix)[0] == R
    matrix["tile-swap"]["learned"] = {"learned": False, "value": 0.24, "ci_lo": -1.3, "ci_hi": 1.8}
    assert claims.verdict_robustness(matrix) == (claims.NOT_MEASURED, [])
    t = {t.id: t for t in claims.thresholds(PROTOCOL)}[6]
    row = claims._robustness_result(matrix, t, PROTOCOL)
    assert row.verdict == claims.NOT_MEASURED and "did not learn the task: tile-swap" in row.measured
    matrix["tile-swap"]["learned"] = None  # unknown (no trained_eval stage) is not learned either
    assert claims.verdict_robustness(matrix)[0] == claims.NOT_MEASURED
    matrix["tile-swap"]["learned"] = {"learned": True}
    matrix["rl-long"] = {"claims": _rows(c1=N), "learned": {"learned": False}}  # an optional variant does not decide
    assert claims.verdict_robustness(matrix)[0] == R


def test_a_stage_finished_in_a_sibling_run_is_linked_not_run_again(tmp_path):
    calls = []

    def work(d):
        calls.append(d)
        (d / "out.bin").write_bytes(b"weights")
        return {"n": 1}

    first, second = tmp_path / "a", tmp_path / "b"
    r1 = StageRunner(first, {}, progress=False)
    r1.run("base", {"x": 1}, work)
    r1.run("other", {"y": 1}, work, deps=("base",))
    r2 = StageRunner(second, {}, progress=False, reuse_from=[first])
    rec = r2.run("base", {"x": 1}, work)
    assert len(calls) == 2 and rec.skipped and rec.run_id == r1.records["base"].run_id
    assert os.path.samefile(first / "base" / "out.bin", second / "base" / "out.bin")  # a hard link, no second copy
    r2.run("other", {"y": 2}, work, deps=("base",))  # another key: run here, not taken from the sibling
    assert len(calls) == 3 and json.loads((second / "other" / "stage.json").read_text())["run_id"] != r1.records["other"].run_id
    r3 = StageRunner(tmp_path / "c", {}, progress=False, reuse_from=[first])
    r3.run("base", {"x": 2}, work)  # a different key is never reused
    assert len(calls) == 4


def test_smoke_matrix_shares_stages_and_every_variant_report_reads_it(tmp_path):
    from welfare_axis.cli import main

    out = tmp_path / "m"
    args = ["robustness", "--preset", "smoke", "--out", str(out), "--variants", "sft+rl,sft", "--skip", "mechanics",
            "--skip", "secondary", "--no-progress"]
    assert main(args) == 0
    marker = {v: {s: json.loads((out / v / s / "stage.json").read_text())["run_id"] for s in ("naive_eval", "train_sft", "extract_naive")}
              for v in ("sft+rl", "sft")}
    assert marker["sft+rl"] == marker["sft"]  # the SFT-only arm is the reference's SFT model, not a second training
    assert not (out / "sft" / "train_rl").exists()
    data = json.loads((out / "robustness.json").read_text())
    assert list(data["variants"]) == ["sft+rl", "sft"] and data["protocol"] == PROTOCOL.stamp()
    assert data["claim6"]["verdict"] == claims.NOT_MEASURED  # tile-swap and other-algorithm did not run
    assert data["claim6"]["status"] == "exploratory"  # seed 0 informed the rules of the claims claim 6 reads
    table = (out / "robustness.md").read_text()
    assert table.count("\n| ") == 10 and "| 5c. " in table and (out / "robustness.png").stat().st_size > 0
    learned = [line for line in table.splitlines() if line.startswith("| learned the task")][0]
    assert learned.count("yes (") + learned.count("no (") == 2 and set(data["variants"]["sft"]["learned"]) >= {"learned", "ci_lo"}
    row6 = [c for c in json.loads((out / "sft" / "report" / "claims.json").read_text())["claims"] if c["id"] == 6][0]
    assert "variants: sft+rl, sft" in row6["measured"]
    assert main(args) == 0  # resumable: nothing re-runs but the reports
    assert {s: json.loads((out / "sft" / s / "stage.json").read_text())["run_id"] for s in ("naive_eval", "train_sft")} == \
        {s: marker["sft"][s] for s in ("naive_eval", "train_sft")}
    with pytest.raises(SystemExit) as e:  # an unknown variant is refused while parsing
        main(["robustness", "--preset", "smoke", "--out", str(out), "--variants", "sft,nope"])
    assert e.value.code == 2


def test_the_algorithm_variant_switches_to_the_other_algorithm():
    from welfare_axis.robustness import VARIANTS, _overrides

    v = VARIANTS["other-algorithm"]
    assert _overrides(v, {}, "cpu-small")["train.algo"] == "dr_grpo"  # cpu-small's RL is REINFORCE
    assert _overrides(v, {"train.algo": "dr_grpo"}, "cpu-small")["train.algo"] == "reinforce"
    assert _overrides(VARIANTS["rl-long"], {}, "cpu-small")["train.n_steps"] == "16"  # 4 x the preset's 4 steps


def test_a_finished_stage_with_another_key_is_not_called_unfinished(tmp_path, capsys):
    sibling, run = tmp_path / "a", tmp_path / "b"
    StageRunner(sibling, {}, progress=False).run("report", {"t": 0}, lambda d: {})
    r = StageRunner(run, {}, progress=False, reuse_from=[sibling])
    r.run("report", {"t": 1}, lambda d: (d / "x").write_text("1") and {})
    capsys.readouterr()
    StageRunner(run, {}, progress=False, reuse_from=[sibling]).run("report", {"t": 2}, lambda d: {})  # no sibling has key t=2
    assert "unfinished output" not in capsys.readouterr().err
