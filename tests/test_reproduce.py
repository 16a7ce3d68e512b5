"""End to end: `welfare-axis reproduce --preset smoke` (tiny model), its report, and resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from probes.protocol import PROTOCOL
from welfare_axis.cli import main
from welfare_axis.report import SECTIONS


def _markers(run: Path) -> dict[str, float]:
    return {p.parent.name: p.stat().st_mtime_ns for p in run.glob("*/stage.json")}


def test_smoke_reproduce_killed_mid_run_resumes_and_writes_every_section(tmp_path):
    run = tmp_path / "smoke"
    proc = subprocess.Popen(
        [sys.executable, "-m", "welfare_axis.cli", "reproduce", "--preset", "smoke", "--out", str(run), "--no-progress"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    # Kill it hard once training has finished, i.e. somewhere in the stages after it.
    deadline = time.time() + 300
    while not (run / "train_rl" / "stage.json").exists():
        assert proc.poll() is None, "reproduce exited before training finished"
        assert time.time() < deadline
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = _markers(run)
    assert {"naive_eval", "train_rl"} <= set(before)
    assert "report" not in before

    assert main(["reproduce", "--preset", "smoke", "--out", str(run), "--no-progress"]) == 0
    after = _markers(run)
    for stage, mtime in before.items():  # finished stages were not redone
        assert after[stage] == mtime, stage
    assert {"naive_eval", "train_sft", "train_rl", "trained_eval", "extract_naive", "extract_trained", "analyze",
            "steer_naive", "steer_trained", "mechanics", "report"} <= set(after)

    md = (run / "report" / "report.md").read_text()
    for section in SECTIONS:
        assert f"## {section}" in md, section
    ids = ("1", "2", "3", "4", "5", "5b", "5c", "5d", "6")
    claims_rows = [line for line in md.splitlines() if any(line.startswith(f"| {i}. ") for i in ids)]
    assert len(claims_rows) == 9
    verdicts = ("| reproduced |", "| not reproduced |", "| not measured |", "| not measurable on this model |")
    assert all(any(v in row for v in verdicts) for row in claims_rows)
    mech = json.loads((run / "mechanics" / "mechanics.json").read_text())
    assert [h["id"] for h in mech["hypotheses"]] == ["H1", "H1m", "H5m", "H2", "H2b", "H3", "H4", "H4b"]
    assert mech["pairs"]["onestep_start"] == "train_sft/checkpoints/step_000004/model"  # RL's start, run-relative
    # H3/H4 read RL's own update (SFT model -> trained), a LoRA: H4's rank test is not measured by construction
    assert mech["pairs"]["anatomy"] == {"start": "train_sft/checkpoints/step_000004/model", "lora_only": True}
    assert "RL's own update" in mech["summary"]["anatomy"]["delta"] and mech["summary"]["anatomy"]["low_rank_test"] is None
    mech_rows = [line for line in md.split("## Mechanics")[1].splitlines() if line.startswith("| H")]
    assert len(mech_rows) == 8 and all(any(v in row for v in ("| supported |", "| contradicted |", "| inconclusive |", "| not measured |"))
                                       for row in mech_rows)
    html = (run / "report" / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 5
    for rel in [l.split("](")[1].rstrip(")") for l in md.splitlines() if l.startswith("![")]:
        assert (run / "report" / rel).exists(), rel  # figure links resolve from the report folder
    # the naive control has its own N (the preset's extract_n_naive), and the report states each model's
    ext_n = {k: json.loads((run / k / "stage.json").read_text())["summary"]["n_per_class"] for k in ("extract_naive", "extract_trained")}
    assert ext_n == {"extract_naive": 60, "extract_trained": 48}
    rel = json.loads((run / "analyze" / "summary.json").read_text())["reliability_at_l_star"]["vectors"]
    assert rel["u_mold"]["n_per_class"] == 60 and rel["v_mold"]["n_per_class"] == 48
    setup = json.loads((run / "run_config.json").read_text())
    assert setup["model"] == "tiny" and setup["package_version"]
    # smoke trains like cpu-small: a full-fine-tune SFT, then LoRA RL starting from the SFT model
    rl_model = json.loads((run / "train_rl" / "config.json").read_text())["config"]["model"]
    assert Path(rl_model).parent.parent.parent == run / "train_sft"
    written = json.loads((run / "report" / "claims.json").read_text())
    assert [c["id"] for c in written["claims"]] == [1, 2, 3, 4, 5, "5b", "5c", "5d", 6] and all(c["threshold"] for c in written["claims"])
    # every verdict names the protocol that decided it, and seed 0 (which informed the rules) is exploratory
    assert written["protocol"] == PROTOCOL.stamp() and written["seed"] == 0 and written["status"] == "exploratory"
    assert written["trained_model"].startswith("sft+rl: SFT 4 steps") and "RL 4 steps (dr_grpo" in written["trained_model"]
    c1 = json.loads((run / "analyze" / "summary.json").read_text())["verdict_inputs"]["claim1"]["trained"]["raw"]
    assert set(c1["nulls"]) == {"shuffled", "covariance", "isotropic"} and all(f["draws"] == PROTOCOL.nulls.draws for f in c1["nulls"].values())
    fm = json.loads((run / "trained_eval" / "comparison.json").read_text())["first_move"]
    assert fm["naive"]["n_mazes"] == fm["trained"]["n_mazes"] == 4 and "ci_lo" in fm["expected_reward_diff"]

    # --force redoes one stage and what depends on it, nothing upstream.
    assert main(["reproduce", "--preset", "smoke", "--out", str(run), "--no-progress", "--force", "steer_trained"]) == 0
    forced = _markers(run)
    assert forced["steer_trained"] != after["steer_trained"] and forced["analyze"] == after["analyze"]


def test_reproduce_bad_arguments_are_one_line(capsys):
    try:
        code = main(["reproduce", "--preset", "nope"])
    except SystemExit as e:
        code = e.code
    assert code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1
    assert main(["report", "/nonexistent/run"]) == 2


def test_smoke_reproduce_with_sft_only_uses_the_sft_model(tmp_path):
    run = tmp_path / "sft"
    assert main(["reproduce", "--preset", "smoke", "--training", "sft", "--out", str(run), "--no-progress"]) == 0
    assert (run / "train_sft" / "stage.json").exists() and not (run / "train_rl").exists()
    stage = json.loads((run / "extract_trained" / "stage.json").read_text())
    assert stage["deps"] == ["train_sft"]
    md = (run / "report" / "report.md").read_text()
    assert "| training | SFT: full fine-tune" in md and "RL" not in md.split("| training |")[1].splitlines()[0]
    assert json.loads((run / "run_config.json").read_text())["training"] == "sft"


@pytest.mark.parametrize("seed", [1, 3])
def test_smoke_reproduce_on_other_seeds_gives_confirmatory_verdicts(tmp_path, seed):
    run = tmp_path / f"seed{seed}"
    assert main(["reproduce", "--preset", "smoke", "--seed", str(seed), "--out", str(run), "--no-progress"]) == 0
    written = json.loads((run / "report" / "claims.json").read_text())
    assert written["seed"] == seed and written["status"] == "confirmatory" and written["protocol"]["hash"] == PROTOCOL.hash
    assert written["hardware"]["cpu_flags"] is not None  # bitwise equality is promised per machine kind: the run says which
    assert (run / "mechanics" / "stage.json").exists()  # seed 3 once divided by zero there
    assert json.loads((run / "run_config.json").read_text())["seed"] == seed


def test_skip_secondary_reads_out_the_verdicts_only(tmp_path):
    run = tmp_path / "primary"
    assert main(["reproduce", "--preset", "smoke", "--out", str(run), "--skip", "secondary", "--skip", "mechanics", "--no-progress"]) == 0
    assert (run / "steer_naive" / "axis_claim.json").exists() and not (run / "steer_naive" / "sentiment_samples.parquet").exists()
    assert not (run / "steer_trained").exists() and not (run / "mechanics").exists()
    written = json.loads((run / "report" / "claims.json").read_text())
    assert [c["id"] for c in written["claims"]] == [1, 2, 3, 4, 5, "5b", "5c", "5d", 6]

    # --set changes a field without editing code, is recorded, and re-runs exactly the stages that use it
    before = _markers(run)
    args = ["reproduce", "--preset", "smoke", "--out", str(run), "--skip", "secondary", "--skip", "mechanics", "--no-progress"]
    assert main(args + ["--set", "steer.alphas=-2,0,2", "--set", "steer.n_random=3"]) == 0
    after = _markers(run)
    assert {k for k in before if after[k] != before[k]} == {"steer_naive", "report"}
    setup = json.loads((run / "run_config.json").read_text())
    assert setup["overrides"] == {"steer.alphas": "-2,0,2", "steer.n_random": "3"}
    assert setup["config"]["study"]["steer"]["alphas"] == [-2.0, 0.0, 2.0] and setup["config"]["study"]["steer"]["n_random"] == 3
    # the same overrides from a YAML file resolve to the same config: nothing re-runs but the report
    (tmp_path / "over.yaml").write_text("steer:\n  alphas: [-2, 0, 2]\n  n_random: 3\n")
    assert main(args + ["--config", str(tmp_path / "over.yaml")]) == 0
    assert {k for k, v in _markers(run).items() if v != after[k]} == {"report"}
    with pytest.raises(SystemExit) as e:  # only the optional parts can be skipped
        main(["reproduce", "--preset", "smoke", "--out", str(run), "--skip", "steer_naive"])
    assert e.value.code == 2
