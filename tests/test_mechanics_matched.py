"""Matched RL vs SFT (mechanics/matched.py): the arms differ only in whose moves they train on, the
matched-progress read-out against hand-computed values, and the command on the tiny model."""

import json

import numpy as np
import pandas as pd
import pytest

from mechanics import hypotheses
from mechanics.matched import arm_configs, at_progress, decisions_per_step, matched_summary
from probes.protocol import PROTOCOL
from training.config import config_from_preset
from welfare_axis.cli import main


def test_arms_share_everything_but_the_data():
    rl, sft = arm_configs(config_from_preset("cpu-small"), "/models/start").values()
    s = sft.sft_view()
    assert rl.model == sft.model == "/models/start"
    assert sft.sft_steps == rl.n_steps and sft.sft_lr == rl.lr and sft.sft_schedule == "cosine"
    assert s.finetune == rl.finetune == "lora" and s.lora_top_layers == rl.lora_top_layers and s.lora_r == rl.lora_r
    assert sft.sft_batch * s.maze.n_moves == decisions_per_step(rl) == 8 * 8 * 4  # decisions per step
    assert s.checkpoint_every == rl.checkpoint_every and s.seed == rl.seed
    assert s.maze.n_moves == config_from_preset("cpu-small").sft_view().maze.n_moves == 1  # the start model's own SFT task


def test_at_progress_interpolates_at_the_first_crossing():
    progress = np.array([0.0, 0.2, 0.6, 0.4, 1.0])
    values = np.array([0.0, 1.0, 3.0, 10.0, 20.0])
    assert at_progress(progress, values, 0.4) == pytest.approx(2.0)  # halfway from 0.2 to 0.6, not the later 0.4
    assert at_progress(progress, values, 0.1) == pytest.approx(0.5)
    assert np.isnan(at_progress(progress, values, 1.5))


def _tables(rl_rewards, sft_rewards, rl_kl, sft_kl):
    """Two mazes and one off-target set of two prompts (+ a maze set); every maze moves alike, every prompt alike."""
    policy = [{"arm": "start", "step": 0, "maze_seed": m, "expected_value": 0.0} for m in (1, 2)]
    kl = [{"arm": "start", "step": 0, "set": s, "id": f"{s}{i}", "kl": 0.0} for s in ("maze", "neutral") for i in (0, 1)]
    for arm, rewards, kls in (("rl", rl_rewards, rl_kl), ("sft", sft_rewards, sft_kl)):
        for step, (r, k) in enumerate(zip(rewards, kls), start=1):
            policy += [{"arm": arm, "step": step, "maze_seed": m, "expected_value": r} for m in (1, 2)]
            kl += [{"arm": arm, "step": step, "set": s, "id": f"{s}{i}", "kl": k} for s in ("maze", "neutral") for i in (0, 1)]
    return pd.DataFrame(policy), pd.DataFrame(kl)


def test_matched_summary_reads_both_arms_at_the_level_both_reach():
    # RL reaches +0.4 (at step 2), SFT +0.8: matched level 0.4. RL's KL there is 0.02; SFT crosses 0.4
    # halfway between its step 0 (0, KL 0) and step 1 (0.8, KL 0.1): KL 0.05. Ratio 2.5, exactly in every draw.
    policy, kl = _tables([0.2, 0.4], [0.8, 0.8], [0.01, 0.02], [0.1, 0.2])
    s = matched_summary(policy, kl, decisions=256, n_boot=200)
    assert s["matched_progress"] == pytest.approx(0.4)
    assert s["arms"]["rl"]["off_target_kl_at_match"] == pytest.approx(0.02)
    assert s["arms"]["sft"]["off_target_kl_at_match"] == pytest.approx(0.05)
    r = s["sft_to_rl_off_target_kl"]
    assert r["value"] == pytest.approx(2.5) and r["ci_lo"] == pytest.approx(2.5) and r["ci_hi"] == pytest.approx(2.5)
    assert s["arms"]["sft"]["decisions"] == [0, 256, 512]
    (h1m,) = [h for h in hypotheses.evaluate({"matched": s}) if h.id == "H1m"]
    assert h1m.verdict == hypotheses.SUPPORTED


def test_matched_summary_without_progress_is_not_measured():
    policy, kl = _tables([-0.1, -0.2], [0.5, 0.6], [0.01, 0.02], [0.1, 0.2])
    s = matched_summary(policy, kl, decisions=1, n_boot=20)
    assert np.isnan(s["matched_progress"]) and "never rose" in s["note"]
    (h1m,) = [h for h in hypotheses.evaluate({"matched": s}) if h.id == "H1m"]
    assert h1m.verdict == hypotheses.NOT_MEASURED


def test_matched_cli_on_the_tiny_model(tmp_path, capsys):
    out = tmp_path / "m"
    argv = ["mechanics", "matched", "--model", "tiny", "--preset", "tiny", "--steps", "2", "--eval-mazes", "2", "--n-maze", "2",
            "--n-per-set", "1", "--n-boot", "20", "--no-progress", "--out", str(out), "--extract", "6"]
    assert main(argv) == 0
    rec = json.loads((out / "matched.json").read_text())
    axis = rec["summary"]["axis_contrast"]  # every checkpoint's vectors: RL's change minus SFT's, and each arm's recruitment
    assert set(axis["contrast"]) == {"antiparallelism", "alignment_with_start_axis"}
    assert all(len(v) == 3 for stat in axis["statistics"].values() for v in stat.values())  # start + 2 checkpoints per arm
    assert axis["statistics"]["alignment_with_start_axis"]["rl"][0] == pytest.approx(1.0)  # the start's axis with itself
    assert set(axis["recruitment"]["sft"]) == {"start_axis_u", "valence"} and "p" in axis["recruitment"]["rl"]["valence"]["nulls"]["shuffled"]
    # two tiny-model steps do not raise both arms' first-move reward: no matched level, so the title question (H5m) is not
    # measured rather than answered (the contrast on a constructed case: tests/test_mechanics_stats.py)
    assert axis["contrast"]["antiparallelism"]["verdict"] == "not measured"
    assert "H5m" not in {h["id"] for h in rec["hypotheses"]}  # the record lists the measured hypotheses only
    assert rec["measurement"] == "matched" and rec["provenance"]["config"]["steps"] == 2
    assert rec["summary"]["protocol"] == PROTOCOL.stamp() and rec["summary"]["status"] == "exploratory"  # seed 0 informed claim 1's rule
    table = pd.read_parquet(out / "matched.parquet")
    assert sorted(zip(table["arm"], table["step"])) == [("rl", 0), ("rl", 1), ("rl", 2), ("sft", 0), ("sft", 1), ("sft", 2)]
    later = table[table["step"] > 0]
    assert (later["off_target_kl"] > 0).all() and (table.loc[table["step"] == 0, "off_target_kl"] == 0).all()
    assert (later["decisions"] == later["step"] * 2 * 4 * 3).all()  # tiny: 2 mazes x 4 episodes x 3 moves per step
    assert (out / "matched.png").stat().st_size > 1000 and (out / "train_rl" / "checkpoints").exists()
    assert "wrote matched.json" in capsys.readouterr().out
    # H3 and H4b read on the RL arm's own update (start -> its last checkpoint), not on a delta that is mostly SFT
    update = rec["summary"]["rl_update"]
    assert "RL arm" in update["anatomy"]["delta"] and update["recruitment"]["vectors"] == "RL arm step 2 against the start model"
    assert {"H3", "H4b"} <= {h["id"] for h in rec["hypotheses"]}
    # a second read finds every checkpoint's vectors where the first left them and gives the same numbers
    stamp = (out / "vectors" / "rl_2" / "vectors.safetensors").stat().st_mtime_ns
    assert main(argv) == 0
    again = json.loads((out / "matched.json").read_text())["summary"]["axis_contrast"]
    assert (out / "vectors" / "rl_2" / "vectors.safetensors").stat().st_mtime_ns == stamp
    assert again["statistics"] == axis["statistics"]


def test_matched_refuses_an_adapter_as_the_start(tmp_path, capsys):
    adapter = tmp_path / "lora"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    assert main(["mechanics", "matched", "--model", "tiny", "--checkpoint", str(adapter), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "not a whole model folder" in err and len(err.splitlines()) == 1 and not (tmp_path / "o").exists()
