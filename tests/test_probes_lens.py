"""probes/lens.py: failure-token matching, cosine ranking, failure score, random null, table."""

import json

import numpy as np
import pytest
import torch

from probes import lens

# -- failure tokens -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [" cannot", "Cannot", " impossible", " inability", " unable", " incorrect", " fail", " failed",
     "n't", "'t", " never", "Ġnever", "▁not", " doesn", " Don", " won’t", " can’t", " Unfortunately",
     " nonexistent", "NO", " refused", " mistakes", "failure"],
)
def test_failure_tokens_count(text):
    assert lens.is_failure_token(text)


@pytest.mark.parametrize(
    "text",
    [" normal", " note", " nothingness", " nevertheless", " nonetheless", " know", " can", " the",
     " possible", " t", "t", "'", " n", "arent", "nor", "don", " parent", " minor", "", " 123", " loss"],
)
def test_non_failure_tokens_do_not_count(text):
    # "nothingness": "nothing" is exact-only (a noun about void, not a failure marker);
    # "arent"/"nor"/"don" without a leading space are glued word pieces ("p"+"arent", "mi"+"nor").
    assert not lens.is_failure_token(text)


def test_normalise_token():
    assert lens.normalise_token("ĠCan’t!") == "can't"
    assert lens.normalise_token("  ▁Does-not 3") == "doesnot"
    assert lens.normalise_token("Ġ") == ""


def test_failure_mask_matches_tokens_pads_and_caches(tiny):
    _, tok = tiny
    mask = lens.failure_mask(tok)
    assert mask.dtype == bool and mask.shape == (len(tok),)
    expected = [lens.is_failure_token(lens.readable_token(tok, i)) for i in range(len(tok))]
    assert mask.tolist() == expected
    assert mask[tok.encode(" cannot")[0]] and mask[tok.encode(" sorry")[0]]
    mask[:] = False  # a copy: the cache must not change
    again = lens.failure_mask(tok, vocab_size=len(tok) + 7)
    assert again.shape == (len(tok) + 7,) and not again[len(tok):].any()
    assert again[: len(tok)].tolist() == expected
    assert lens.failure_mask(tok, vocab_size=10).tolist() == expected[:10]


def test_readable_token_decodes_byte_level_pieces(tiny):
    _, tok = tiny
    (i,) = tok.encode(" cannot")
    assert tok.convert_ids_to_tokens(i) == "Ġcannot"
    assert lens.readable_token(tok, i) == " cannot"


# -- ranking and score -------------------------------------------------------------------------------
# 6 tokens; tokens 0 and 1 are the failure tokens.
W6 = np.array(
    [[1.0, 0, 0, 0], [0.8, 0.6, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [0, 1, 0, 0], [-1, 0, 0, 0]], dtype=np.float32
)
M6 = np.array([True, True, False, False, False, False])


def test_planted_failure_direction_scores_near_top_and_its_negative_near_bottom():
    g = np.ones(4, dtype=np.float32)
    v = W6[M6].mean(0)
    # 2 failure tokens of 6 at the very top -> percentiles (1 + 0.8) / 2 = 0.9, the maximum.
    assert lens.failure_score(lens.token_cosines(W6, g, v), M6) == pytest.approx(0.9)
    assert lens.failure_score(lens.token_cosines(W6, g, -v), M6) == pytest.approx(0.1)
    # the norm of v and the norms of the rows do not matter
    assert lens.failure_score(lens.token_cosines(W6 * np.arange(1, 7)[:, None], g, 5 * v), M6) == pytest.approx(0.9)


def test_token_cosines_are_cosines_with_the_gained_direction():
    rng = np.random.default_rng(1)
    w, g, v = rng.standard_normal((9, 5)), rng.uniform(0.5, 2, 5), rng.standard_normal(5)
    d = g * v
    want = w @ d / np.linalg.norm(w, axis=1) / np.linalg.norm(d)
    np.testing.assert_allclose(lens.token_cosines(w, g, v), want, rtol=1e-5)
    np.testing.assert_allclose(lens.token_cosines(w, np.ones(5), d), want, rtol=1e-5)
    w[3] = 0  # an all-zero row gets cosine 0, not nan
    assert lens.token_cosines(w, g, v)[3] == 0
    with pytest.raises(ValueError):
        lens.token_cosines(w, g, np.zeros(5))


def test_large_norm_failure_row_is_not_top_by_cosine_though_it_is_by_raw_logit():
    w = np.array([[50.0, 500, 0], [1, 0, 0], [0.9, 0.1, 0], [0.8, -0.3, 0], [0, 0, 1]], dtype=np.float32)
    g, v = np.ones(3, dtype=np.float32), np.array([1.0, 0, 0], dtype=np.float32)
    mask = np.array([True, False, False, False, False])
    assert int(np.argmax(w @ (g * v))) == 0  # the raw lens would put the failure row first
    cos = lens.token_cosines(w, g, v)
    assert int(np.argmax(cos)) == 1 and np.argsort(-cos)[:3].tolist() == [1, 2, 3]
    assert lens.failure_score(cos, mask) == pytest.approx(0.25)  # 2nd lowest of 5


def test_failure_score_ties_are_averaged_and_empty_mask_raises():
    assert lens.failure_score(np.zeros(10), np.arange(10) < 3) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        lens.failure_score(np.arange(4.0), np.zeros(4, dtype=bool))


def test_random_scores_are_seeded_chunk_free_and_average_one_half():
    g = np.array([1.0, 2.0, 0.5, 1.0], dtype=np.float32)
    a = lens.random_failure_scores(W6, g, M6, n=2000, seed=3)
    assert a.shape == (2000,) and ((a >= 0.1 - 1e-9) & (a <= 0.9 + 1e-9)).all()
    assert abs(a.mean() - 0.5) < 0.02  # score(-r) = 1 - score(r): chance is 0.5
    np.testing.assert_allclose(a, lens.random_failure_scores(W6, g, M6, n=2000, seed=3, chunk=7))
    assert not np.allclose(a[:50], lens.random_failure_scores(W6, g, M6, n=50, seed=4))
    # each score is failure_score of a seeded Gaussian direction, with the gain applied
    r = np.random.default_rng(3).standard_normal((4, 2000)).astype(np.float32)
    for j in range(5):
        assert a[j] == pytest.approx(lens.failure_score(lens.token_cosines(W6, g, r[:, j]), M6))


# -- model-level ------------------------------------------------------------------------------------
def test_unembedding_plain_peft_and_no_norm():
    from peft import LoraConfig, get_peft_model

    from training.models import tiny_model

    model, _ = tiny_model(n_layers=1, hidden_size=32)  # own copy: the shared fixture is not modified
    with torch.no_grad():
        model.model.norm.weight.fill_(2.0)
    w, g = lens.unembedding(model)
    assert w.dtype == torch.float32 and w.shape == model.get_output_embeddings().weight.shape
    assert torch.equal(g, torch.full((32,), 2.0))
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"]))
    w2, g2 = lens.unembedding(peft_model)
    assert torch.equal(w2, w) and torch.equal(g2, g)

    class Bare(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.head = torch.nn.Linear(8, 11, bias=False)

        def get_output_embeddings(self):
            return self.head

    w3, g3 = lens.unembedding(Bare())
    assert w3.shape == (11, 8) and torch.equal(g3, torch.ones(8))


def _failure_direction(model, tokenizer) -> np.ndarray:
    """A residual direction whose gained version is the mean unit failure row."""
    w, g = (x.numpy() for x in lens.unembedding(model))
    m = lens.failure_mask(tokenizer, vocab_size=w.shape[0])
    return lens._unit_rows(w)[m].mean(0) / g  # zero rows (padding) stay zero


def test_top_tokens_on_a_planted_direction(tiny):
    model, tok = tiny
    w, g = (x.numpy() for x in lens.unembedding(model))
    cos = lens.token_cosines(w, g, _failure_direction(model, tok))
    top = lens.top_tokens(cos, tok, k=10)
    assert len(top["promoted"]) == len(top["suppressed"]) == 10
    assert np.all(np.diff(top["promoted_cos"]) <= 0) and np.all(np.diff(top["suppressed_cos"]) >= 0)
    assert top["promoted_cos"][0] == pytest.approx(cos.max())
    assert top["n_failure_promoted"] == sum(lens.is_failure_token(t) for t in top["promoted"]) >= 3
    assert " cannot" in top["promoted"]
    assert top["n_failure_suppressed"] == 0


def test_lens_table_end_to_end_and_z_against_the_null(tiny):
    model, tok = tiny
    h = model.config.hidden_size
    rng = np.random.default_rng(0)
    f = _failure_direction(model, tok)
    planted = np.stack([f, -f, f, -f, f])  # [L=5, H]
    sets = {"v_mold": planted, "v_gold": -planted, "u_rand": rng.standard_normal((5, h))}
    table, info = lens.lens_table(model, tok, sets, layers=[1, 2], n_random=50, seed=0, k=8)
    expected = {"vector", "layer", "failure_score", "z", "null_p2_5", "null_p97_5", "null_percentile",
                "n_failure_promoted", "n_failure_suppressed", "promoted", "suppressed"}
    assert expected <= set(table.columns)
    assert len(table) == 6 and table[["vector", "layer"]].values.tolist()[:2] == [["v_mold", 1], ["v_mold", 2]]
    row = table.set_index(["vector", "layer"])
    # layer 1 of v_mold is -f (suppresses), layer 2 is +f (promotes); v_gold the opposite
    assert row.loc[("v_mold", 2), "z"] > 3 and row.loc[("v_mold", 2), "null_percentile"] == 1.0
    assert row.loc[("v_mold", 1), "z"] < -3 and row.loc[("v_mold", 1), "null_percentile"] == 0.0
    assert row.loc[("v_gold", 1), "failure_score"] == pytest.approx(row.loc[("v_mold", 2), "failure_score"])
    assert row.loc[("v_mold", 2), "failure_score"] > row.loc[("v_mold", 2), "null_p97_5"]
    rs = info["random_scores"]
    assert rs["p2_5"] <= rs["mean"] <= rs["p97_5"] and abs(rs["mean"] - 0.5) < 0.1
    for _, r in table.iterrows():
        assert r["z"] == pytest.approx((r["failure_score"] - rs["mean"]) / rs["sd"])
        promoted = json.loads(r["promoted"])
        assert len(promoted) == 8 and r["n_failure_promoted"] == sum(map(lens.is_failure_token, promoted))
    assert row.loc[("v_mold", 2), "n_failure_promoted"] >= 3
    assert info["n_failure_tokens"] == int(lens.failure_mask(tok).sum()) and info["vocab_size"] == len(tok)
    assert "cos(W_U row, final-norm gain * v)" in info["recipe"] and "impossib" in info["recipe"]
    # the same seed gives the same table
    again, _ = lens.lens_table(model, tok, sets, layers=[1, 2], n_random=50, seed=0, k=8)
    assert again.equals(table)
