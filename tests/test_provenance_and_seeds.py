"""A probe batch without advantage is not measured (no division by zero), and every artifact's
provenance says where it ran (CPU, float-kernel extensions, threads, BLAS, accelerator)."""

import copy
import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from core import artifacts
from core.artifacts import cpu_flags, cpu_model_name, hardware, provenance
from envs import MazeConfig
from mechanics import onestep
from mechanics.hypotheses import NOT_MEASURED, evaluate
from mechanics.examples import ON_TARGET, maze_examples, off_target_examples
from mechanics.gating import SUMS
from training.rl import episode_tensors
from training.rollout import EpisodeRecord

MAZE = MazeConfig(size=12)


def _episodes(rewards: list[list[float]]) -> list[EpisodeRecord]:
    """Episodes of 3 moves (actions N, E, S) in groups of 2, with the given per-move rewards."""
    return [EpisodeRecord(maze_seed=i // 2, group=i // 2, env_seed=i, actions=[0, 1, 2], logprobs=[-1.0] * 3, rewards=r,
                          neighbours=[(0, 0, 0, 0)] * 3) for i, r in enumerate(rewards)]


def test_move_advantages_of_all_equal_returns_are_zero_and_say_so():
    # group 0: returns 1 and 1 (reached differently); group 1: returns 0 and 0. Dr. GRPO: A = return - group mean = 0.
    t = episode_tensors(_episodes([[1, 0, 0], [0, 0, 1], [0, 0, 0], [0, 0, 0]]), group_size=2)
    adv, mean_abs = onestep.move_advantages(t)
    assert adv.shape == (4, 3) and torch.equal(adv, torch.zeros(4, 3))
    assert mean_abs == 0.0  # no RL signal: the caller must not divide by it
    # with signal: group 0 returns 2, 0 (mean 1) -> A = +1, -1 on each of 3 moves; group 1 equal -> 0; mean |A| = 6 / 12
    t = episode_tensors(_episodes([[1, 1, 0], [0, 0, 0], [1, 0, 0], [0, 0, 1]]), group_size=2)
    adv, mean_abs = onestep.move_advantages(t)
    assert torch.equal(adv, torch.tensor([[1.0] * 3, [-1.0] * 3, [0.0] * 3, [0.0] * 3]))
    assert mean_abs == pytest.approx(0.5)


def test_weighted_logp_hand_computed_and_nan_without_weight(monkeypatch):
    # 2 episodes of 1 move; log pi over N, E, S, W. Episode 0 took N (p = 1/2), episode 1 took E (p = 1/4).
    logp4 = torch.log(torch.tensor([[[0.5, 0.25, 0.125, 0.125]], [[0.25, 0.25, 0.25, 0.25]]]))
    calls = []

    def fake(model, eps, dir_ids, temperature, start, pad_id):
        calls.append(list(eps))
        return logp4[torch.tensor(eps)]

    monkeypatch.setattr(onestep, "direction_logprobs", fake)
    actions = torch.tensor([[0], [1]])
    got = onestep.weighted_logp(None, [0, 1], actions, torch.tensor([[1.0], [-1.0]]), 1.0, None, 0, micro_batch=1)
    assert got == pytest.approx((math.log(0.5) - math.log(0.25)) / 2)  # (+1 log 1/2 - 1 log 1/4) / (|1| + |-1|) = log(2) / 2
    assert calls == [[0], [1]]
    calls.clear()
    assert math.isnan(onestep.weighted_logp(None, [0, 1], actions, torch.zeros(2, 1), 1.0, None, 0))
    assert calls == []  # no target: no forward either


def test_probe_batch_without_advantage_is_not_measured(lm, monkeypatch):
    model, tok = lm
    sets = {ON_TARGET: maze_examples(tok, 2, maze_config=MAZE, n_moves=2), **off_target_examples(tok, 2)}
    real = onestep.compute_advantages
    monkeypatch.setattr(onestep, "compute_advantages", lambda algo, t: torch.zeros_like(real(algo, t)))  # every group tied
    model = copy.deepcopy(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    steps, gates = onestep.one_step_probe(model, tok, sets, MAZE, n_batches=2, n_mazes=2, group_size=2, n_moves=2, delta=0.01, refine=1)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    rl, sft = steps[steps["kind"] == "rl"], steps[steps["kind"] == "sft"]
    assert len(rl) == 2 and not rl["rl_signal"].any() and (rl["mean_abs_advantage"] == 0).all()
    assert not rl["matched"].any()
    for col in ("dot_grad_target", "grad_norm", "eta", "target_change", "step_norm", "kl_off"):
        assert rl[col].isna().all(), col
    assert sft["matched"].all() and np.allclose(sft["target_change"], 0.01, rtol=0.25)  # SFT is measured as ever
    assert set(gates["kind"]) == {"sft"}  # no RL gradient, no RL gating rows
    s = onestep.probe_summary(steps, gates, n_boot=20)
    assert s["n_batches"] == 2 and s["n_no_rl_signal"] == 2
    assert math.isnan(s["sft_to_rl_off_target_kl"]["value"]) and s["sft_to_rl_off_target_kl"]["n_den"] == 0
    assert math.isnan(s["gating"]["rl"]["gating_ratio"]["value"]) and math.isnan(s["rl_minus_sft_gating"]["value"])
    assert np.isfinite(s["gating"]["sft"]["gating_ratio"]["value"])
    verdicts = {h.id: h.verdict for h in evaluate({"onestep": s})}
    assert verdicts["H1"] == verdicts["H2"] == verdicts["H2b"] == NOT_MEASURED


def test_probe_summary_counts_no_signal_batches_and_keeps_the_others():
    """One tied batch among three: it drops out of the paired ratio, the other two make it."""
    nan = float("nan")
    rows = [{"batch": b, "kind": k, "rl_signal": b != 1, "target_change": 0.02, "kl_off": kl}
            for b, (kl_rl, kl_sft) in enumerate([(1.0, 2.0), (nan, 5.0), (1.0, 4.0)]) for k, kl in (("rl", kl_rl), ("sft", kl_sft))]
    rows[2]["target_change"] = nan
    gates = pd.DataFrame([{"batch": b, "kind": k, "layer": 0, **{s: 1.0 for s in SUMS}} for b in range(3) for k in ("rl", "sft")
                          if not (k == "rl" and b == 1)])
    s = onestep.probe_summary(pd.DataFrame(rows), gates, n_boot=20)
    assert s["n_no_rl_signal"] == 1
    assert s["sft_to_rl_off_target_kl"]["value"] == pytest.approx((2.0 + 4.0) / (1.0 + 1.0))  # batch 1 left out
    assert s["gating"]["rl"]["gating_ratio"]["n"] == 2 and s["rl_minus_sft_gating"]["n"] == 2


X86 = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu vme sse sse2 ssse3 sse4_1 sse4_2 avx avx2 fma avx512f avx512vl avx512_fp16 avx_vnni avx512_vnni amx_tile
bogomips\t: 4000.00

processor\t: 1
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu vme sse sse2 ssse3 sse4_1 sse4_2 avx avx2 fma avx512f avx512vl avx512_fp16 avx_vnni avx512_vnni amx_tile amx_bf16 avx512_bf16
"""

ARM = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm
CPU implementer\t: 0x41
CPU part\t: 0xd0c
"""


def test_cpu_flags_parser_reads_exactly_the_float_kernel_extensions():
    # decoys: sse4_1, avx512vl, avx512_fp16, avx_vnni (not in the list); amx_bf16/avx512_bf16 only on processor 1 (union)
    assert cpu_flags(X86) == ["amx_bf16", "amx_tile", "avx", "avx2", "avx512_bf16", "avx512_vnni", "avx512f", "fma", "sse4_2"]
    assert cpu_flags(ARM) == ["asimd"]  # asimdhp, asimdrdm are other words
    assert cpu_flags("Features\t: half thumb fastmult vfp edsp neon vfpv3\n") == ["neon"]  # 32-bit ARM
    assert cpu_flags("") == [] and cpu_flags("garbage without colons\n") == []
    assert cpu_model_name(X86) == "Intel(R) Xeon(R) Platinum 8480+"
    assert cpu_model_name(ARM) is None
    assert cpu_model_name("model\t\t: 143\n") is None  # x86's model number is not a name


def test_provenance_has_a_hardware_entry_with_the_right_types():
    p = provenance(config={"a": 1}, seed=3)
    h = p["hardware"]
    assert set(h) >= {"cpu", "cpu_flags", "logical_cpus", "torch_threads", "accelerator", "blas"}
    assert h["cpu"] is None or (isinstance(h["cpu"], str) and h["cpu"])
    assert h["cpu_flags"] is None or (isinstance(h["cpu_flags"], list) and h["cpu_flags"] == sorted(h["cpu_flags"])
                                      and set(h["cpu_flags"]) <= artifacts.FLOAT_KERNEL_FLAGS)
    assert isinstance(h["logical_cpus"], int) and h["logical_cpus"] >= 1
    assert h["torch_threads"] == torch.get_num_threads()  # torch is imported here
    assert h["blas"] is None or all(isinstance(lib, dict) for lib in h["blas"])
    if torch.cuda.is_available():
        assert isinstance(h["accelerator"]["devices"], list) and h["accelerator"]["devices"]
    else:
        assert h["accelerator"] is None
    assert json.loads(json.dumps(p))["hardware"] == h  # plain JSON, as the artifacts store it


def test_hardware_never_fails_without_cpuinfo(monkeypatch):
    monkeypatch.setattr(artifacts, "_CPUINFO", "/nonexistent/cpuinfo")
    artifacts._cpu.cache_clear()
    try:
        h = hardware()
        assert h["cpu_flags"] is None
        assert h["cpu"] is None or isinstance(h["cpu"], str)  # platform.processor() or nothing
    finally:
        artifacts._cpu.cache_clear()


def test_hardware_does_not_import_torch():
    code = ("import sys; from core.artifacts import hardware; h = hardware(); "
            "assert 'torch' not in sys.modules and h['torch_threads'] is None and h['accelerator'] is None; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
