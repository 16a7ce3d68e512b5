"""`welfare-axis mechanics` on the tiny model: each measurement writes its JSON (with provenance and
verdicts) and parquet; bad input is one line and exit 2."""

import json

import pandas as pd
import pytest
import torch

from welfare_axis.cli import main

SMALL = ["--model", "tiny", "--n-boot", "50", "--no-progress"]
EXAMPLES = ["--size", "12", "--n-maze", "3", "--moves", "2", "--n-per-set", "2"]


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    """A LoRA adapter of the tiny model with random (non-zero) B, so the 'trained' model differs."""
    from peft import LoraConfig, get_peft_model

    from training.models import tiny_model

    path = tmp_path_factory.mktemp("adapter") / "lora"
    model, _ = tiny_model()
    torch.manual_seed(1)
    get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules="all-linear", init_lora_weights=False)).save_pretrained(path)
    return str(path)


def _record(out, name):
    record = json.loads((out / f"{name}.json").read_text())
    assert record["measurement"] == name and record["provenance"]["package"] == "welfare-axis"
    return record


def test_drift_cli(tmp_path, adapter, capsys):
    assert main(["mechanics", "drift", *SMALL, *EXAMPLES, "--adapter", adapter, "--out", str(tmp_path)]) == 0
    rec = _record(tmp_path, "drift")
    assert set(rec["provenance"]["model"]) == {"start", "trained"} and rec["provenance"]["model"]["trained"]["adapter"] == adapter
    table = pd.read_parquet(tmp_path / "drift.parquet")
    assert set(table["set"]) == {"maze", "neutral", "self_report", "instructions", "refusal"} and (table["kl"] > 0).all()
    assert rec["summary"]["ratio_off_to_on"]["value"] > 0
    assert "wrote drift.json" in capsys.readouterr().out


def test_anatomy_cli_lora_is_not_a_low_rank_test(tmp_path, adapter):
    assert main(["mechanics", "anatomy", *SMALL, "--adapter", adapter, "--out", str(tmp_path), "--top-k", "2"]) == 0
    rec = _record(tmp_path, "anatomy")
    assert {h["id"] for h in rec["hypotheses"]} == {"H3"}  # H4 on a LoRA delta would test the adapter's r
    assert rec["summary"]["median_effective_rank"] == pytest.approx(2.0, abs=0.1)  # LoRA r = 2
    assert len(pd.read_parquet(tmp_path / "anatomy.parquet")) > 10


def test_probe_cli(tmp_path):
    assert main(["mechanics", "onestep", *SMALL, *EXAMPLES, "--n-batches", "2", "--group", "2", "--out", str(tmp_path)]) == 0
    rec = _record(tmp_path, "onestep")
    assert {h["id"] for h in rec["hypotheses"]} <= {"H1", "H2", "H2b"} and rec["summary"]["delta"] == 0.02
    steps, gates = pd.read_parquet(tmp_path / "onestep.parquet"), pd.read_parquet(tmp_path / "onestep_gating.parquet")
    assert len(steps) == 4 and set(gates["kind"]) == {"rl", "sft"}


def test_recruitment_cli(tmp_path):
    from probes.vectors import ConceptVectors

    g = torch.Generator().manual_seed(0)
    u = {k: torch.randn(4, 64, generator=g) for k in ("mold", "gold", "path")}
    ConceptVectors(u).save(tmp_path / "u")
    ConceptVectors({k: 2 * x for k, x in u.items()}).save(tmp_path / "v")
    assert main(["mechanics", "recruitment", *SMALL, "--vectors", str(tmp_path / "v"), "--control", str(tmp_path / "u"),
                 "--n-maze", "2", "--moves", "2", "--out", str(tmp_path / "r")]) == 0
    rec = _record(tmp_path / "r", "recruitment")
    assert rec["summary"]["min_mean_cos"]["value"] == pytest.approx(1.0)
    assert [h["verdict"] for h in rec["hypotheses"]] == ["supported"]
    cka = pd.read_parquet(tmp_path / "r" / "recruitment_cka.parquet")
    assert cka["cka"].iloc[1:].to_numpy() == pytest.approx(1.0)  # the same model on both sides


@pytest.mark.parametrize("argv, message", [
    (["onestep", "--group", "1"], "--group must be at least 2"),
    (["drift", "--dtype", "bfloat16"], "float32"),
    (["onestep", "--delta", "0"], "--delta must be positive"),
    (["recruitment", "--vectors", "nowhere", "--control", "nowhere"], "holds no vectors.safetensors"),
])
def test_user_errors_are_one_line_exit_2(tmp_path, capsys, argv, message):
    assert main(["mechanics", argv[0], *SMALL, "--out", str(tmp_path), *argv[1:]]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not any(tmp_path.iterdir())
