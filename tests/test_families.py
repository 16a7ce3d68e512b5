"""Every decoder family transformers ships runs the toolkit: random tiny configs of Llama, Mistral, Qwen2/3,
Gemma2/3, Phi-3, GPT-2, GPT-NeoX, OPT and Falcon, saved with the tiny tokenizer and loaded like any local
model. training/structure.py answers blocks, embeddings, final norm, unembedding and MLP gate for each."""

import json

import pytest
import torch

from envs import MazeConfig
from training.models import TINY_FAMILIES, load_model, tiny_family_model

GATED = {"llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3"}  # down(act(gate(x)) * up(x)) with separate matrices
# families that add position embeddings to inputs_embeds before block 0: no exact split forward
EMBEDS_CHANGED = {"gpt2", "opt"}


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    out = {}
    for family in TINY_FAMILIES:
        model, tok = tiny_family_model(family)
        model.save_pretrained(root / family)
        tok.save_pretrained(root / family)
        out[family] = root / family
    return out


@pytest.mark.parametrize("family", list(TINY_FAMILIES))
def test_model_structure_of_every_family(family, family_dirs):
    from probes.capture import capture_texts
    from steering.steerer import Steerer
    from training.structure import block_index, decoder_layers, final_norm, final_norm_gain, gated_mlp, input_embeddings

    model, tok = load_model(str(family_dirs[family]))
    blocks = decoder_layers(model)
    assert len(blocks) == 4 and input_embeddings(model).weight.shape[0] == len(tok)
    for i, block in enumerate(blocks):  # every block parameter's name gives its block, embeddings give none
        names = {n for n, p in model.named_parameters() if any(p is q for q in block.parameters())}
        assert names and {block_index(n) for n in names} == {i}, family
    assert all(block_index(n) is None for n, p in model.named_parameters() if any(p is q for q in input_embeddings(model).parameters()))
    assert (gated_mlp(blocks[0]) is not None) == (family in GATED)

    # the gain is what the final norm multiplies a normalised vector by (a random weight, so 1 + w of Gemma shows)
    norm = final_norm(model)
    with torch.no_grad():
        norm.weight.normal_(0.5, 0.2)
        x = torch.randn(3, model.config.hidden_size)
        gain = final_norm_gain(model)
        if getattr(norm, "bias", None) is not None:
            ref = (x - x.mean(-1, keepdim=True)) / x.std(-1, unbiased=False, keepdim=True) * gain + norm.bias
        else:
            ref = x / x.pow(2).mean(-1, keepdim=True).sqrt() * gain
        assert torch.allclose(norm(x), ref, atol=1e-3), family

    text = ["You are in a maze. Which way? N"]
    plain = capture_texts(model, tok, text, [1, 2, 3])
    with Steerer(model, torch.ones(model.config.hidden_size), layer=2, alpha=5.0):
        steered = capture_texts(model, tok, text, [1, 2, 3])
    assert torch.allclose(plain[:, 0], steered[:, 0]) and not torch.allclose(plain[:, 1], steered[:, 1])


@pytest.mark.parametrize("family", list(TINY_FAMILIES))
def test_split_forward_is_exact_or_refused(family):
    from training.forward import SPLIT_ATOL, split_forward_error
    from training.rollout import ChatTokens, rollout

    model, tok = tiny_family_model(family)
    eps = rollout(model, tok, MazeConfig(size=12, n_moves=2), [5], group_size=1, temperature=0.7, seed=3, cache_layer=2)
    err = split_forward_error(model, eps[0], ChatTokens(tok).dir_ids, 0.7, 2)
    assert (err > SPLIT_ATOL) == (family in EMBEDS_CHANGED), (family, err)


def test_rl_with_lora_top_blocks_falls_back_to_the_full_forward_where_the_split_is_not_exact(family_dirs, tmp_path, capsys):
    from welfare_axis.cli import main

    args = ["train", "rl", "--preset", "tiny", "--model", str(family_dirs["gpt2"]), "--finetune", "lora", "--lora-top-layers", "2",
            "--n-steps", "1", "--out", str(tmp_path / "rl"), "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr()
    assert "the update runs every block" in printed.out + printed.err


@pytest.mark.parametrize("family", [f for f in TINY_FAMILIES if f != "llama"])  # Llama: every other smoke test
def test_smoke_pipeline_on_every_family(family, family_dirs, tmp_path):
    """The whole pipeline but claim 5's secondary read-outs, on a random tiny model of each family."""
    from welfare_axis.cli import main

    run = tmp_path / "run"
    assert main(["reproduce", "--preset", "smoke", "--model", str(family_dirs[family]), "--out", str(run), "--skip", "secondary",
                 "--no-progress"]) == 0
    claims = json.loads((run / "report" / "claims.json").read_text())
    assert [c["id"] for c in claims["claims"]] == [1, 2, 3, 4, 5, "5b", "5c", "5d", 6]
    h2 = {h["id"]: h["verdict"] for h in json.loads((run / "mechanics" / "mechanics.json").read_text())["hypotheses"]}["H2"]
    assert (h2 == "not measured") == (family not in GATED)  # no gated MLP: no gate to read
