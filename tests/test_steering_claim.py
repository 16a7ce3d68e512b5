"""Claim 5's inputs: norm-matched directions, random percentiles, paired v - u CIs, the positive control."""

import numpy as np
import pandas as pd
import pytest
import torch

from probes import ConceptVectors
from steering.claim import claim_directions, claim_inputs, paired_diff, per_prompt_slopes


def _samples(slopes: dict[str, float], n_prompts=12, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    base = rng.normal(0, 1, n_prompts)
    for p in range(n_prompts):
        rows.append({"vector": "none", "alpha": 0.0, "prompt_id": f"p{p}", "score": base[p]})
        for name, s in slopes.items():
            for a in (-4.0, 4.0):
                rows.append({"vector": name, "alpha": a, "prompt_id": f"p{p}", "score": base[p] + s * a + rng.normal(0, 0.05)})
    return pd.DataFrame(rows)


def test_per_prompt_slopes_and_paired_diff_are_hand_checkable():
    df = _samples({"v_mold": -0.5, "u_mold": 0.0})
    assert np.allclose(per_prompt_slopes(df, "v_mold"), -0.5, atol=0.03)
    d, lo, hi = paired_diff(df, "v_mold", "u_mold")
    assert abs(d + 0.5) < 0.03 and lo < d < hi < 0


def test_claim_inputs_give_reproduced_only_when_controls_are_beaten():
    rnd = {f"random_{i}": s for i, s in enumerate(np.linspace(-0.1, 0.1, 10))}
    good = claim_inputs(_samples({"v_mold": -0.5, "v_gold": 0.5, "u_mold": 0.0, "u_gold": 0.0, "valence": 0.6, **rnd}), 5, "test", 0.1)
    assert good["n_random"] == 10 and good["random_lo"] < -0.05 and good["alpha_in_residual_norms"]["4.0"] == 0.4
    # the generated self-reports are claim 5's secondary: slopes next to the random band and paired CIs
    assert good["v_mold"] < good["random_lo"] and good["v_gold"] > good["random_hi"] and good["diff_mold_hi"] < 0 < good["diff_gold_lo"]
    flat = claim_inputs(_samples({"v_mold": -0.05, "v_gold": 0.5, "u_mold": 0.0, "u_gold": 0.0, "valence": 0.6, **rnd}), 5, "test", 0.1)
    assert flat["random_lo"] < flat["v_mold"] < flat["random_hi"]


def test_claim_directions_are_all_the_same_norm():
    L, H = 3, 8
    g = torch.Generator().manual_seed(0)
    v = ConceptVectors({k: torch.randn(L, H, generator=g) * s for k, s in (("gold", 1.0), ("mold", 5.0), ("path", 1.0))})
    u = ConceptVectors({k: torch.randn(L, H, generator=g) * 100 for k in ("gold", "mold", "path")})
    svecs = claim_directions(v, u, 1, torch.randn(H, generator=g), 2.5, 10, 0)
    names = [s.name for s in svecs]
    assert names[:5] == ["v_gold", "u_gold", "v_mold", "u_mold", "valence"] and len(names) == 15
    assert all(abs(s.norm - 2.5) < 1e-5 for s in svecs)
    assert torch.allclose(svecs[0].vector / 2.5, v.get("gold", 1) / v.get("gold", 1).norm())


def test_steering_layer_is_chosen_in_random_direction_sds_not_raw_log_odds():
    from steering.claim import choose_steering_layer

    # Layer 3: the largest raw gap (4 - -4 = 8) but random directions spread SD 8 there (z gap 1);
    # layer 5: a raw gap of 2 against a random SD of 0.5 (z gap 4). The rule must take layer 5.
    rows = []
    for layer, v_gold, v_mold, z_gold, z_mold in ((3, 4.0, -4.0, 0.5, -0.5), (5, 1.0, -1.0, 2.0, -2.0)):
        rows += [{"layer": layer, "direction": "v_gold", "readout": "sentiment", "effect": v_gold, "random_z": z_gold},
                 {"layer": layer, "direction": "v_mold", "readout": "sentiment", "effect": v_mold, "random_z": z_mold},
                 {"layer": layer, "direction": "v_gold", "readout": "compliance", "effect": 9.0, "random_z": 9.0}]
    summary = pd.DataFrame(rows)
    assert choose_steering_layer(summary, [3, 5]) == 5
    with pytest.raises(ValueError, match="random"):
        choose_steering_layer(summary.assign(random_z=np.nan), [3, 5])
