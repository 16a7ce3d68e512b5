"""RL/SFT runs on the tiny model: resume determinism, NaN guard, checkpoints that load, CLI, evaluation."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

import training.rl as rl
from training.checkpoint import TrainingDiverged, checkpoint_dirs, final_checkpoint
from training.config import TRAIN_PRESETS, TrainConfig, config_from_preset
from training.evaluate import compare_evals, evaluate_policy
from training.models import load_model
from training.policy import build_policy
from training.rl import NON_DETERMINISTIC_COLUMNS, read_metrics, train_rl
from training.sft import sft_loss, train_sft


def _cfg(**kw):
    return config_from_preset("tiny", **kw)


def _metrics(run):
    return read_metrics(run).drop(columns=list(NON_DETERMINISTIC_COLUMNS))


@pytest.mark.parametrize("overrides", [dict(lora_top_layers=2), dict(finetune="full", lr=1e-4)], ids=["lora-top2-cached", "full"])
def test_interrupted_then_resumed_run_equals_uninterrupted(tmp_path, monkeypatch, overrides):
    cfg = _cfg(**overrides)
    train_rl(cfg, tmp_path / "a", progress=False)

    real_save = rl.save_checkpoint

    def save_then_die(run_dir, step, *args, **kw):
        out = real_save(run_dir, step, *args, **kw)
        if step == 2:
            raise KeyboardInterrupt  # killed right after the step-2 checkpoint
        return out

    monkeypatch.setattr(rl, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_rl(cfg, tmp_path / "b", progress=False)
    monkeypatch.setattr(rl, "save_checkpoint", real_save)
    assert [p.name for p in checkpoint_dirs(tmp_path / "b")] == ["step_000002"]
    train_rl(cfg, tmp_path / "b", resume=True, progress=False)

    a, b = _metrics(tmp_path / "a"), _metrics(tmp_path / "b")
    assert list(a["step"]) == [1, 2, 3, 4]
    pd.testing.assert_frame_equal(a, b)
    assert a["lr"].iloc[0] == cfg.lr and a["lr"].is_monotonic_decreasing
    assert a["beta"].iloc[0] == cfg.entropy_beta
    assert (a["grad_norm"] > 0).all()  # the update really changed something
    # Final weights identical too.
    ma, _ = load_model("tiny", checkpoint=final_checkpoint(tmp_path / "a"))
    mb, _ = load_model("tiny", checkpoint=final_checkpoint(tmp_path / "b"))
    for p, q in zip(ma.parameters(), mb.parameters()):
        assert torch.equal(p, q)


def test_run_folder_config_and_checkpoint_loads(tmp_path, tiny):
    cfg = _cfg(n_steps=4)
    path = train_rl(cfg, tmp_path, progress=False)
    # every checkpoint keeps its model; only the latest keeps the resume state
    assert [(c.name, (c / "model").is_dir(), (c / "state.pt").exists()) for c in checkpoint_dirs(tmp_path)] == [
        ("step_000002", True, False), ("step_000004", True, True)]
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["config"]["model"] == "tiny" and saved["config"]["maze"]["size"] == 12
    assert TrainConfig.from_dict(saved["config"]) == cfg
    assert saved["provenance"]["model"]["model_id"] == "tiny"
    assert (path / "adapter_config.json").exists() and path == final_checkpoint(tmp_path)
    trained, _ = load_model("tiny", checkpoint=path)
    naive, _ = tiny
    diff = max((p - q).abs().max().item() for p, q in zip(trained.parameters(), naive.parameters()))
    assert diff > 0  # the merged adapter changed the weights
    with pytest.raises(ValueError, match="--resume"):
        train_rl(cfg, tmp_path, progress=False)


def test_nan_loss_stops_with_message_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    real = rl.policy_loss
    calls = {"n": 0}

    def maybe_nan(*args, **kw):
        loss, parts = real(*args, **kw)
        calls["n"] += 1
        return (loss * float("nan"), parts) if calls["n"] > 2 else (loss, parts)  # step 3 (1 micro-batch per step... x2)

    monkeypatch.setattr(rl, "policy_loss", maybe_nan)
    with pytest.raises(TrainingDiverged, match="step_000002"):
        train_rl(_cfg(micro_batch=8), tmp_path, progress=False)
    assert [p.name for p in checkpoint_dirs(tmp_path)] == ["step_000002"]
    assert list(read_metrics(tmp_path)["step"]) == [1, 2]


def test_reinforce_with_kl_runs(tmp_path):
    # grpo differs from dr_grpo only in its advantages (unit-tested); reinforce changes the loss path.
    train_rl(_cfg(algo="reinforce", n_steps=1, kl_coef=0.1), tmp_path, progress=False)
    m = read_metrics(tmp_path)
    assert np.isfinite(m["loss"]).all() and m["kl"].iloc[0] == pytest.approx(0.0, abs=1e-6)  # B=0: policy == reference


def test_sft_loss_and_run(tmp_path, tiny):
    logp4 = torch.log(torch.tensor([[[0.5, 0.25, 0.125, 0.125], [0.25, 0.25, 0.25, 0.25]]]))
    assert sft_loss(logp4, torch.tensor([[0, 3]]), 2.0).item() == pytest.approx(-(np.log(0.5) + np.log(0.25)) / 2)
    cfg = _cfg(sft_finetune="lora", sft_steps=4, sft_batch=4, sft_lr=3e-3)
    path = train_sft(cfg, tmp_path, progress=False)
    m = read_metrics(tmp_path)
    assert list(m["step"]) == [1, 2, 3, 4] and (m["accuracy"].between(0, 1)).all()
    # The NLL of the scripted moves of the first training batch falls (loss only on direction tokens).
    from envs import good_policy_trajectory
    from training.seeds import step_seeds
    from training.forward import direction_logprobs
    from training.rollout import ChatTokens
    from training.sft import episode_from_messages

    mazes, seed = step_seeds(cfg.seed, 0, cfg.sft_batch, 2)
    trajs = [good_policy_trajectory(ms, seed=seed % 2**31, config=cfg.maze) for ms in mazes]

    def nll(model, tok):
        chat = ChatTokens(tok)
        eps = [episode_from_messages(chat, t.messages, t.actions) for t in trajs]
        with torch.no_grad():
            lp = direction_logprobs(model, eps, chat.dir_ids, 1.0, 0, tok.pad_token_id)
        return sft_loss(lp, torch.tensor([e.actions for e in eps]), 1.0).item()

    assert nll(*load_model("tiny", checkpoint=path)) < nll(*tiny)


def test_presets_and_overrides():
    for name in TRAIN_PRESETS:
        config_from_preset(name)
    c = config_from_preset("cpu-small", lr=1e-4, maze={"n_moves": 7})
    assert c.lr == 1e-4 and c.maze.n_moves == 7 and c.lora_top_layers == TRAIN_PRESETS["cpu-small"]["lora_top_layers"]
    p = config_from_preset("paper")
    assert (p.lora_r, p.lora_alpha, p.lr, p.mazes_per_step, p.group_size, p.temperature, p.maze.n_moves) == (32, 64, 3e-6, 8, 64, 0.7, 15)
    with pytest.raises(ValueError, match="algo"):
        config_from_preset("tiny", algo="ppo")


def test_compare_evals_is_paired_on_the_same_mazes():
    base = pd.DataFrame({"maze_seed": [1, 2], "episode": [0, 0], "return": [0.0, 1.0], "golds": [0, 1], "molds": [1, 1]})
    tr = base.assign(golds=[1, 2], molds=[0, 0])
    out = compare_evals(tr, base)
    assert out["golds"]["value"] == 1.0 and out["molds"]["value"] == -1.0 and out["golds"]["ci_lo"] == out["golds"]["ci_hi"] == 1.0


def test_cli_train_and_eval(tmp_path, capsys):
    from welfare_axis.cli import main

    run = tmp_path / "run"
    assert main(["train", "rl", "--preset", "tiny", "--n-steps", "1", "--out", str(run), "--no-progress"]) == 0
    assert main(["train", "eval", "--run", str(run), "--n-mazes", "3", "--out", str(tmp_path / "t.parquet"), "--no-progress"]) == 0
    assert main(["train", "eval", "--model", "tiny", "--size", "12", "--n-moves", "3", "--n-mazes", "3",
                 "--out", str(tmp_path / "n.parquet"), "--baseline", str(tmp_path / "t.parquet"), "--no-progress"]) == 0
    summary = json.loads((tmp_path / "n.json").read_text())
    assert summary["vs_baseline"]["n_episodes"] == 3 and "ci_lo" in summary["vs_baseline"]["golds"]
    assert summary["first_move"]["n_mazes"] == 3 and "ci_lo" in summary["vs_baseline"]["first_move_expected_reward"]
    assert len(pd.read_parquet(tmp_path / "n_first_move.parquet")) == 3
    # A baseline played on another maze is refused with one line, not silently compared.
    assert main(["train", "eval", "--model", "tiny", "--size", "12", "--n-moves", "2", "--n-mazes", "3",
                 "--out", str(tmp_path / "m.parquet"), "--baseline", str(tmp_path / "t.parquet"), "--no-progress"]) == 2
    df = pd.read_parquet(tmp_path / "t.parquet")
    assert list(df.columns[:5]) == ["maze_seed", "episode", "return", "golds", "molds"] and len(df) == 3
    assert main(["train", "rl", "--preset", "tiny", "--out", str(run), "--no-progress"]) == 2  # exists: use --resume
    # --resume keeps the saved config: a flag that would be ignored is refused instead.
    capsys.readouterr()
    assert main(["train", "rl", "--preset", "tiny", "--out", str(run), "--resume", "--lr", "0.1", "--n-moves", "5", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--lr, --n-moves would be ignored" in err and len(err.strip().splitlines()) == 1
    # SFT has its own fine-tuning mode: RL's flag is refused with the one to use, not silently ignored.
    assert main(["train", "sft", "--preset", "tiny", "--out", str(tmp_path / "sft"), "--finetune", "lora", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "use --sft-finetune" in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "sft").exists()


def test_evaluate_policy_heldout_mazes_are_paired(tiny):
    from envs import MazeConfig

    cfg = MazeConfig(size=12, n_moves=2)
    a = evaluate_policy("tiny", n_mazes=3, seed=0, maze_config=cfg, model_and_tokenizer=tiny, progress=False)
    b = evaluate_policy("tiny", n_mazes=3, seed=0, maze_config=cfg, model_and_tokenizer=tiny, progress=False)
    pd.testing.assert_frame_equal(a, b)
    train_mazes = set(rl.step_seeds(0, 0, 3)[0])
    assert not train_mazes & set(a["maze_seed"])


def test_first_move_policy_is_exact(tiny):
    import copy

    from envs import MazeConfig
    from training.evaluate import first_move_policy, summarize_first_move
    from training.rollout import ChatTokens

    model, tok = tiny
    cfg = MazeConfig(size=12, n_moves=2)
    df = first_move_policy(model, tok, cfg, [11, 12, 13, 14])
    p = df[["p_N", "p_E", "p_S", "p_W"]].to_numpy()
    assert np.allclose(p.sum(1), 1.0, atol=1e-5)
    rewards = {"G": 19.9, "M": -10.1, "P": -0.1}  # the env's reward: step penalty included
    expected = [sum(pi * rewards[t] for pi, t in zip(row, tiles)) for row, tiles in zip(p, df["tiles"])]
    assert np.allclose(df["expected_reward"], expected, atol=1e-4)
    # A policy with zero direction logits is uniform: no excess on any tile kind.
    flat = copy.deepcopy(model)
    head = flat.get_output_embeddings()
    with torch.no_grad():
        head.weight[ChatTokens(tok, cfg.letters).dir_ids] = 0.0
    u = first_move_policy(flat, tok, cfg, [11, 12, 13, 14])
    assert np.allclose(u[["p_N", "p_E", "p_S", "p_W"]], 0.25, atol=1e-6)
    s = summarize_first_move(u)
    assert all(abs(s[k]) < 1e-6 or np.isnan(s[k]) for k in ("gold_excess", "mold_excess"))


def test_rl_starts_from_a_full_sft_checkpoint(tmp_path):
    """SFT then RL: a full fine-tune checkpoint is a whole model folder, so `--model` takes it."""
    sft = train_sft(_cfg(sft_finetune="full", sft_steps=2, sft_batch=4, sft_lr=3e-3, sft_checkpoint_every=2), tmp_path / "sft", progress=False)
    cfg = _cfg(finetune="full", model=str(sft), n_steps=1)
    policy, _ = build_policy(cfg)
    sft_model, _ = load_model("tiny", checkpoint=sft)
    naive, _ = load_model("tiny")
    for p, q, r in zip(policy.parameters(), sft_model.parameters(), naive.parameters()):
        assert torch.equal(p, q)
    assert any(not torch.equal(q, r) for q, r in zip(sft_model.parameters(), naive.parameters()))
    train_rl(cfg, tmp_path / "rl", progress=False)
    saved = json.loads((tmp_path / "rl" / "config.json").read_text())
    assert saved["provenance"]["model"]["path"] == str(sft)


def test_sft_has_its_own_finetune_mode_trajectory_length_and_schedule(tmp_path):
    """The cpu-small recipe: SFT full-fine-tunes one-move trajectories at a constant LR while RL keeps LoRA and 3 moves."""
    cfg = _cfg(finetune="lora", sft_finetune="full", sft_n_moves=1, sft_schedule="constant", sft_steps=3, sft_batch=4,
               sft_lr=1e-3, sft_checkpoint_every=3, checkpoint_every=1)
    assert cfg.maze.n_moves == 3 and cfg.sft_view().maze.n_moves == 1 and cfg.sft_view().finetune == "full"
    path = train_sft(cfg, tmp_path / "sft", progress=False)
    m = read_metrics(tmp_path / "sft")
    assert (m["moves_per_trajectory"] == 1).all() and (m["lr"] == 1e-3).all()
    assert (path / "config.json").exists()  # a whole model, not a LoRA adapter
    assert [p.name for p in (tmp_path / "sft" / "checkpoints").iterdir()] == ["step_000003"]  # sft_checkpoint_every, not RL's
    saved = json.loads((tmp_path / "sft" / "config.json").read_text())["config"]
    assert saved["maze"]["n_moves"] == 3 and saved["finetune"] == "lora"  # the saved config is the whole one, for RL and eval
    cosine = _cfg(sft_steps=3, sft_batch=4, sft_lr=1e-3, sft_checkpoint_every=3)
    train_sft(cosine, tmp_path / "cos", progress=False)
    lrs = list(read_metrics(tmp_path / "cos")["lr"])
    assert lrs[0] == pytest.approx(1e-3) and lrs[1] == pytest.approx(1e-3 * 0.75) and lrs[2] == pytest.approx(1e-3 * 0.25)
    with pytest.raises(ValueError, match="sft_schedule"):
        _cfg(sft_schedule="linear")
    with pytest.raises(ValueError, match="sft_finetune"):
        _cfg(sft_finetune="qlora")
