"""Concept-vector math against a direct computation on the tiny model; capture; save/load; GGUF."""

import json

import numpy as np
import pytest
import torch

from probes import ConceptVectors
from probes.capture import capture_texts
from probes.extract import build_examples, extract_vectors, load_examples
from training.models import load_model

N_PER_CLASS = 6
MAZE = dict(max_moves=3)


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny")


@pytest.fixture(scope="module")
def extracted(tiny, tmp_path_factory):
    model, tok = tiny
    out = tmp_path_factory.mktemp("vec")
    cv = extract_vectors(model, tok, N_PER_CLASS, seed=3, batch_size=5, progress=False, out_dir=out, **MAZE)
    return cv, out


def _direct_last_token(model, tok, texts, ids: bool = False):
    """Reference: one sequence at a time, every block's INPUT kept by plain pre-hooks, last token read.

    Cross-checked against output_hidden_states: the input of block l is hidden_states[l]
    (hidden_states[0] = the embeddings), which is the layer convention.
    """
    from training.structure import decoder_layers

    rows = []
    with torch.no_grad():
        for t in texts:
            enc = {"input_ids": torch.tensor([t])} if ids else tok(t, return_tensors="pt", add_special_tokens=False)
            full = []
            pre = lambda m, args, kwargs: full.append(args[0] if args else kwargs["hidden_states"])  # noqa: E731
            handles = [b.register_forward_pre_hook(pre, with_kwargs=True) for b in decoder_layers(model)]
            try:
                hs = model(**enc, output_hidden_states=True).hidden_states
            finally:
                for h in handles:
                    h.remove()
            for layer in range(len(full)):
                assert torch.allclose(full[layer], hs[layer])
            rows.append(torch.stack([h[0, -1] for h in full]))
    return torch.stack(rows).double()  # [N, L, H]


def test_vectors_match_direct_diff_of_means(tiny, extracted):
    model, tok = tiny
    cv, _ = extracted
    texts, examples = build_examples(tok, N_PER_CLASS, 3, None, MAZE["max_moves"])
    acts = _direct_last_token(model, tok, texts)
    kinds = examples["kind"].to_numpy()
    for k in ("mold", "gold", "path"):
        m = torch.from_numpy(kinds == k)
        expected = acts[m].mean(0) - acts[~m].mean(0)  # pooled other classes
        assert torch.allclose(cv.get(k).double(), expected, atol=1e-4, rtol=1e-4), k
        assert torch.allclose(cv.class_means[k].double(), acts[m].mean(0), atol=1e-4)
    assert cv.n_layers == model.config.num_hidden_layers and cv.hidden_size == model.config.hidden_size
    assert cv.meta["n_per_class"] == {"mold": N_PER_CLASS, "gold": N_PER_CLASS, "path": N_PER_CLASS}
    assert "block_input" in cv.meta["layer_convention"]


def test_saved_activations_match_and_reload(tiny, extracted):
    cv, out = extracted
    examples, acts = load_examples(out)
    assert acts.shape == (3 * N_PER_CLASS, cv.n_layers, cv.hidden_size) and acts.dtype == np.float16
    a = acts.astype(np.float64)
    m = examples["kind"].to_numpy() == "gold"
    np.testing.assert_allclose(a[m].mean(0) - a[~m].mean(0), cv.get("gold").numpy(), atol=2e-2, rtol=1e-2)
    back = ConceptVectors.load(out)
    for k in cv.names:
        assert torch.equal(back.get(k), cv.get(k))
        assert torch.equal(back.class_means[k], cv.class_means[k])
    meta = json.loads((out / "meta.json").read_text())
    assert meta["layer_convention"] == cv.meta["layer_convention"]
    assert meta["model"]["model_id"] == "tiny" and meta["seed"] == 3
    back.check_model(tiny[0])
    with pytest.raises(ValueError, match="extract vectors for this model"):
        ConceptVectors({"gold": torch.zeros(2, 8)}).check_model(tiny[0])


def test_capture_batch_size_one_equals_padded_batch(tiny):
    model, tok = tiny
    texts = ["short text", "a somewhat longer text with more tokens in it, to force padding", "mid length one"]
    layers = [0, 2, 3]
    for reduce in ("last", "mean"):
        batched = capture_texts(model, tok, texts, layers, reduce=reduce, batch_size=3)
        single = torch.cat([capture_texts(model, tok, [t], layers, reduce=reduce, batch_size=1) for t in texts])
        assert torch.allclose(batched, single, atol=1e-5), reduce
    # and the capture equals output_hidden_states at the same layer (block input)
    direct = _direct_last_token(model, tok, texts)[:, layers].float()
    assert torch.allclose(capture_texts(model, tok, texts, layers, reduce="last", batch_size=2), direct, atol=1e-5)


def test_capture_does_not_run_lm_head(tiny):
    model, tok = tiny
    called = []
    h = model.lm_head.register_forward_hook(lambda *a: called.append(1))
    try:
        capture_texts(model, tok, ["hello maze"], [1])
    finally:
        h.remove()
    assert called == []


def test_export_gguf_round_trip(extracted, tmp_path):
    import gguf

    cv, _ = extracted
    path = cv.export_gguf("mold", tmp_path / "mold.gguf", layers=[2, 3], scale=2.0)
    reader = gguf.GGUFReader(str(path))
    assert reader.fields["general.architecture"].contents() == "controlvector"
    assert reader.fields["controlvector.layer_count"].contents() == 2
    assert reader.fields["controlvector.model_hint"].contents() == "tiny"
    tensors = {t.name: np.asarray(t.data) for t in reader.tensors}
    # llama.cpp adds direction.k at block k's output = the input of block k + 1 = our layer k + 1
    assert set(tensors) == {"direction.1", "direction.2"}
    np.testing.assert_allclose(tensors["direction.2"].reshape(-1), 2.0 * cv.get("mold", 3).numpy(), rtol=1e-6)
    for bad in (0, 1):
        with pytest.raises(ValueError, match=f"layer {bad} cannot be exported"):
            cv.export_gguf("mold", tmp_path / "x.gguf", layers=[bad])


def test_channel_moments_match_hidden_states(tiny):
    from probes.capture import channel_moments

    model, tok = tiny
    texts = ["the bus leaves at nine", "water boils at one hundred degrees today"]
    mean, sd = channel_moments(model, tok, texts, [1, 3], skip=2, batch_size=2)
    rows = {1: [], 3: []}
    with torch.no_grad():
        for t in texts:
            hs = model(input_ids=torch.tensor([tok(t, add_special_tokens=False)["input_ids"]]), output_hidden_states=True).hidden_states
            for layer in rows:
                rows[layer].append(hs[layer][0, 2:].double())
    for j, layer in enumerate((1, 3)):
        x = torch.cat(rows[layer])
        assert torch.allclose(mean[j], x.mean(0), atol=1e-5) and torch.allclose(sd[j], x.std(0, unbiased=False), atol=1e-5)


def test_continuation_capture_equals_full_sequences(tiny):
    """The shared-prefix path (one prefix pass into a KV cache, then one token per continuation)
    reads the same block inputs as running each whole sequence."""
    from probes.capture import capture_continuations

    model, tok = tiny
    g = torch.Generator().manual_seed(0)
    prefix = torch.randint(5, 200, (2, 9), generator=g)
    last = torch.randint(5, 200, (2, 3), generator=g)
    layers = [0, 1, 3]
    got = capture_continuations(model, prefix, last, layers)
    assert got.shape == (2, 3, 3, model.config.hidden_size)
    for b in range(2):
        seqs = [prefix[b].tolist() + [int(t)] for t in last[b]]
        direct = _direct_last_token(model, None, seqs, ids=True)[:, layers].float()
        assert torch.allclose(got[b], direct, atol=1e-5)


def test_common_prefix_length():
    from probes.capture import common_prefix_length

    shared = list(range(1, 11))
    assert common_prefix_length([shared + [11], shared + [12, 13], shared + [11, 14]]) == 10
    assert common_prefix_length([shared, shared + [12]]) == 9  # every sequence keeps a token after the prefix
    assert common_prefix_length([shared + [11], [1, 2, 3] + shared]) == 0  # nothing shared
    assert common_prefix_length([shared[:5] + [7], shared[:5] + [8]]) == 0  # 5 shared tokens: under the minimum


def test_common_prefix_capture_equals_full_sequences(tiny):
    """One prefix pass into a KV cache, then right-padded remainders of different lengths with
    position ids continuing from the prefix, read the same block inputs as whole sequences."""
    from probes.capture import iter_captures, iter_common_prefix_captures, last_token_spans

    model, _ = tiny
    g = torch.Generator().manual_seed(1)
    prefix = torch.randint(5, 200, (11,), generator=g).tolist()
    ids = [prefix + torch.randint(5, 200, (n,), generator=g).tolist() for n in (1, 6, 3, 9, 2)]
    layers = [0, 2, 3]

    def gather(it):
        out = torch.empty((len(ids), len(layers), model.config.hidden_size))
        for idx, acts in it:
            out[idx] = acts
        return out

    cached = gather(iter_common_prefix_captures(model, ids, layers, batch_size=3))
    full = gather(iter_captures(model, ids, last_token_spans(ids), layers, batch_size=3))
    assert torch.allclose(cached, full, atol=1e-5)
    direct = _direct_last_token(model, None, ids, ids=True)[:, layers].float()
    assert torch.allclose(cached, direct, atol=1e-5)


def test_extraction_caches_the_chat_prefix(extracted):
    cv, _ = extracted
    # the system turn and the start of the maze prompt are the same in every trajectory; the
    # vectors still equal a direct computation (test_vectors_match_direct_diff_of_means)
    assert cv.meta["common_prefix_tokens"] >= 8 and cv.meta["shared_prefix_cache"] is False


def test_paired_extraction_shares_prefixes_and_matches_full_sequences(tiny):
    from probes.extract import shared_prefixes
    from probes.capture import tokenize_texts

    model, tok = tiny
    n = 8
    texts, examples = build_examples(tok, n, 2, None, 2, design="paired")
    assert list(examples["kind"]) == ["mold"] * n + ["gold"] * n + ["path"] * n
    assert list(examples["state"]) == list(range(n)) * 3
    assert (examples.groupby("state")["maze_seed"].nunique() == 1).all()
    shared = shared_prefixes(tokenize_texts(tok, texts), n)
    assert shared is not None and len(shared[0]) == n and all(len(x) == 3 for x in shared[1])
    cv = extract_vectors(model, tok, n, seed=2, batch_size=3, progress=False, max_moves=2, design="paired")
    assert cv.meta["design"] == "paired" and cv.meta["shared_prefix_cache"] is True
    acts = _direct_last_token(model, tok, texts)
    kinds = examples["kind"].to_numpy()
    for k in ("mold", "gold", "path"):
        m = torch.from_numpy(kinds == k)
        assert torch.allclose(cv.get(k).double(), acts[m].mean(0) - acts[~m].mean(0), atol=1e-4, rtol=1e-4), k
    # a tokenizer that merged the final letter into the text before it gets full sequences
    assert shared_prefixes([[1, 2, 3], [1, 2, 4], [1, 9, 3]], 1) is None


def test_unknown_extraction_design_is_refused(tiny):
    model, tok = tiny
    with pytest.raises(ValueError, match="unknown extraction design 'pairs'"):
        extract_vectors(model, tok, 4, progress=False, design="pairs")


def test_the_cli_offers_exactly_the_extraction_designs():
    """cmd_probe repeats DESIGNS so the parser does not import torch; they must not drift apart."""
    import argparse

    from probes.extract import DESIGNS
    from welfare_axis.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    design = next(a for a in sub.choices["extract"]._actions if a.dest == "design")
    assert tuple(design.choices) == DESIGNS
