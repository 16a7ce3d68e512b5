"""Adding alpha * v to the residual stream at assistant tokens, and steered generation.

Convention (docs/study.md, "Steering"): the vector is added at layer `layer`, the INPUT of
decoder block `layer` (the same point probes read, see probes/layers.py), at every assistant-turn token
of the prompt and at every generated token, never at user (or system) tokens.

"Assistant-turn tokens" include the assistant header: for ChatML that is
`<|im_start|>assistant\\n` and, for earlier assistant turns in the prompt, their content and
end-of-turn tokens. We steer the header on purpose: with a generation prompt at the end of
the prefill, the header is the only assistant text there, and the first reply token is
predicted from the header's last position, so leaving it unsteered would leave the first
token unsteered. Left-padding positions are never steered.

Mechanics: `Steerer` is a context manager holding one forward hook. Call
`set_prefill_mask(mask)` before a forward pass over a prompt: that next forward steers
only where mask is True; every later forward (the cached decoding steps, one token each)
steers every position. Without a mask, every position is steered.
"""

from __future__ import annotations

from typing import Callable, Iterator

import torch

from probes.layers import register_layer_hook
from training.chat import render_chat
from training.structure import cache_kwargs, decoder_layers, pad_batch, replace_block_hidden
from training.models import pad_token_id


class Steerer:
    """Context manager adding `alpha * vector` to layer `layer` (the input of decoder block `layer`).

    `vector`: [hidden] (same for every row) or [batch, hidden] (one delta per row, so
    several steering conditions can share a batch). Hooks are removed on exit, also when
    the block raises.
    """

    def __init__(self, model, vector: torch.Tensor | None, layer: int, alpha: float = 1.0):
        blocks = decoder_layers(model)
        if not 0 <= layer < len(blocks):
            raise ValueError(f"layer {layer} out of range 0..{len(blocks) - 1} (layer l = input of block l)")
        self.model = model
        self.layer = layer
        self.alpha = float(alpha)
        hidden = model.config.hidden_size
        if vector is not None:
            vector = torch.as_tensor(vector).detach()
            if vector.shape[-1] != hidden or vector.dim() not in (1, 2):
                raise ValueError(f"steering vector must be [hidden={hidden}] or [batch, {hidden}], got {tuple(vector.shape)}")
        self.vector = vector
        self._mask: torch.Tensor | None = None
        self._handle = None

    def set_prefill_mask(self, mask: torch.Tensor | None) -> None:
        """Positions [batch, seq] to steer in the NEXT forward (the prefill); later forwards steer all."""
        self._mask = None if mask is None else mask.to(torch.bool)

    def _delta(self, h: torch.Tensor) -> torch.Tensor | None:
        if self.vector is None or self.alpha == 0.0:
            return None
        d = (self.alpha * self.vector).to(device=h.device, dtype=h.dtype)
        if d.dim() == 2:
            if d.shape[0] != h.shape[0]:
                raise ValueError(f"per-row steering vectors for {d.shape[0]} rows but the batch has {h.shape[0]}")
            d = d[:, None, :]
        return d

    def _hook(self, h, args, kwargs):
        mask, self._mask = self._mask, None  # a prefill mask applies to one forward only
        delta = self._delta(h)
        if delta is None:
            return None
        if mask is not None:
            if tuple(mask.shape) != tuple(h.shape[:2]):
                raise ValueError(f"prefill mask {tuple(mask.shape)} does not match hidden states {tuple(h.shape[:2])}")
            delta = delta * mask.to(device=h.device, dtype=h.dtype)[..., None]
        return replace_block_hidden(args, kwargs, h + delta)

    def __enter__(self) -> "Steerer":
        if self._handle is not None:
            raise RuntimeError("this Steerer is already active")
        self._handle = register_layer_hook(self.model, self.layer, self._hook)
        return self

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        self._mask = None


# -- rendering chats with an assistant-token mask ---------------------------------------------------
def as_messages(prompt: str | list[dict[str, str]]) -> list[dict[str, str]]:
    """A plain string is one user turn."""
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def assistant_char_spans(tokenizer, messages: list[dict[str, str]], add_generation_prompt: bool = True):
    """(text, [(start, end)]) : the rendered chat and the character spans of assistant turns.

    A span runs from the start of an assistant turn's header to the end of its rendering;
    found by rendering growing prefixes of the conversation (needs a template whose
    renderings of prefixes are prefixes, as ChatML's are).
    """
    text = render_chat(tokenizer, messages, add_generation_prompt=add_generation_prompt)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = render_chat(tokenizer, messages[:i]) if i else ""
        upto = render_chat(tokenizer, messages[: i + 1])
        if not (text.startswith(upto) and upto.startswith(before)):
            raise ValueError("the chat template does not render conversation prefixes as prefixes; cannot locate assistant turns")
        spans.append((len(before), len(upto)))
    if add_generation_prompt:
        base = render_chat(tokenizer, messages) if messages else ""
        if not text.startswith(base):
            raise ValueError("the chat template's generation prompt is not a suffix; cannot locate the assistant header")
        spans.append((len(base), len(text)))
    return text, spans


def encode_chat(tokenizer, prompt, add_generation_prompt: bool = True) -> tuple[list[int], list[bool]]:
    """Token ids of the rendered chat and, per token, whether it belongs to an assistant turn."""
    text, spans = assistant_char_spans(tokenizer, as_messages(prompt), add_generation_prompt)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    mask = [any(s <= start < e for s, e in spans) for start, _ in enc["offset_mapping"]]
    return list(enc["input_ids"]), mask


def left_pad(rows: list[list[int]], masks: list[list[bool]], pad_id: int):
    """input_ids, attention_mask, steer_mask as [batch, max_len] tensors, padded on the left."""
    ids, attn = pad_batch(rows, pad_id, left=True)
    steer, _ = pad_batch(masks, False, left=True, dtype=torch.bool)
    return ids, attn, steer


def next_token_id(tokenizer, context: str, word: str) -> int:
    """Id of the first token of `word` when it follows the text `context` (the tokenizer may merge across the seam)."""
    base = tokenizer(context, add_special_tokens=False)["input_ids"]
    full = tokenizer(context + word, add_special_tokens=False)["input_ids"]
    if full[: len(base)] != base or len(full) == len(base):
        raise ValueError(f"cannot find the first token of {word!r} after {context[-20:]!r}")
    return full[len(base)]


# -- generation --------------------------------------------------------------------------------------
@torch.no_grad()
def generate_rows(
    model,
    tokenizer,
    prompts: list,
    deltas: torch.Tensor | None,
    layer: int,
    max_new_tokens: int = 48,
    temperature: float = 0.0,
    seed: int = 0,
    batch_size: int = 16,
    progress: bool = False,
) -> list[str]:
    """Replies to `prompts`, row i steered by deltas[i] (already multiplied by alpha; None = unsteered).

    Greedy when temperature == 0, else plain temperature sampling (no top-k/top-p).
    Each batch samples from its own generator seeded with (seed, batch index), so a run is
    reproducible for a fixed batch_size; the global torch RNG is left untouched.
    """
    encoded = [encode_chat(tokenizer, p) for p in prompts]
    eos = tokenizer.eos_token_id
    pad = pad_token_id(tokenizer)
    device = next(model.parameters()).device
    replies: list[str] = []
    starts = range(0, len(prompts), batch_size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="generate", unit="batch")
    for b, start in enumerate(starts):
        chunk = encoded[start : start + batch_size]
        ids, attn, steer = left_pad([c[0] for c in chunk], [c[1] for c in chunk], pad)
        d = None if deltas is None else deltas[start : start + batch_size]
        generator = torch.Generator(device=device).manual_seed(seed * 1_000_003 + b)
        with Steerer(model, d, layer, 1.0) as steerer:
            steerer.set_prefill_mask(steer)
            out = decode(model, ids.to(device), attn.to(device), max_new_tokens, temperature, eos, pad, generator)
        for row in out.tolist():
            if eos in row:
                row = row[: row.index(eos)]
            replies.append(tokenizer.decode(row, skip_special_tokens=True))
    return replies


@torch.no_grad()
def decode_steps(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    max_new_tokens: int,
    temperature: float,
    eos_id: int,
    pad_id: int,
    generator: torch.Generator | list[torch.Generator] | None = None,
    use_cache: bool = True,
    on_grow: Callable[[int], None] | None = None,
) -> Iterator[torch.Tensor]:
    """Yield the [batch] next tokens of a left-padded batch, step by step: the one decode loop (batched
    generation and the demo's two streaming panes).

    A plain loop rather than `model.generate`: it is faster here on CPU (no per-step processor
    stack), its sampling uses its own generators (reproducible, global RNG untouched), and it makes
    exactly one prefill forward, which is what `Steerer`'s prefill mask relies on. Greedy when
    temperature == 0, else plain temperature sampling. `generator`: one for the batch (one draw over
    the rows) or one per row (each row draws from its own, so two rows with the same seed and logits
    draw the same token). Rows that have emitted EOS are fed `pad_id`. Without the KV cache every step
    re-runs the whole sequence; `on_grow(length)` is called first (a Steerer's prefill mask must grow).
    """
    from transformers import DynamicCache

    positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache(config=model.config) if use_cache else None  # filled in place by every forward
    kv = cache_kwargs(model, cache) if use_cache else {}
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions, use_cache=use_cache, logits_to_keep=1, **kv)
    done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
    seq, next_pos = input_ids, positions[:, -1:] + 1
    for step in range(max_new_tokens):
        token = _sample(out.logits[:, -1].float(), temperature, generator)
        token = torch.where(done, torch.full_like(token, pad_id), token)
        yield token
        done |= token == eos_id
        if bool(done.all()) or step == max_new_tokens - 1:
            return
        attention_mask = torch.cat([attention_mask, torch.ones_like(attention_mask[:, :1])], dim=1)
        if use_cache:
            out = model(input_ids=token[:, None], attention_mask=attention_mask, position_ids=next_pos, use_cache=True, **kv)
        else:
            seq = torch.cat([seq, token[:, None]], dim=1)
            if on_grow is not None:
                on_grow(seq.shape[1])
            out = model(input_ids=seq, attention_mask=attention_mask, position_ids=(attention_mask.cumsum(-1) - 1).clamp(min=0),
                        use_cache=False, logits_to_keep=1)
        next_pos = next_pos + 1


def _sample(logits: torch.Tensor, temperature: float, generator) -> torch.Tensor:
    if temperature <= 0:
        return logits.argmax(-1)
    if isinstance(generator, (list, tuple)):  # row by row, so a row's draw does not depend on the others
        return torch.stack([torch.multinomial(torch.softmax(logits[i] / temperature, dim=-1), 1, generator=g)[0]
                            for i, g in enumerate(generator)])
    return torch.multinomial(torch.softmax(logits / temperature, dim=-1), 1, generator=generator).squeeze(1)


def decode(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int, temperature: float, eos_id: int,
           pad_id: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """[batch, <= max_new_tokens] new tokens from a left-padded batch (`decode_steps`, collected)."""
    return torch.stack(list(decode_steps(model, input_ids, attention_mask, max_new_tokens, temperature, eos_id, pad_id, generator)), dim=1)


def steered_generate(
    model,
    tokenizer,
    prompts: list,
    vector: torch.Tensor | None,
    layer: int,
    alpha: float,
    max_new_tokens: int = 48,
    temperature: float = 0.0,
    seed: int = 0,
    batch_size: int = 16,
) -> list[str]:
    """Replies to `prompts` (strings = one user turn, or message lists) with alpha * vector added at `layer`."""
    deltas = None
    if vector is not None and alpha != 0:
        v = torch.as_tensor(vector, dtype=torch.float32)
        deltas = (alpha * v).expand(len(prompts), -1) if v.dim() == 1 else alpha * v
    return generate_rows(model, tokenizer, prompts, deltas, layer, max_new_tokens, temperature, seed, batch_size)


@torch.no_grad()
def next_token_probs(
    model, tokenizer, prompts: list, deltas: torch.Tensor | None, layer: int, token_ids: list[int], batch_size: int = 16
) -> torch.Tensor:
    """[n_prompts, len(token_ids)] next-token probabilities after each prompt's generation prompt, steered."""
    encoded = [encode_chat(tokenizer, p) for p in prompts]
    pad = pad_token_id(tokenizer)
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(prompts), batch_size):
        chunk = encoded[start : start + batch_size]
        ids, attn, steer = left_pad([c[0] for c in chunk], [c[1] for c in chunk], pad)
        d = None if deltas is None else deltas[start : start + batch_size]
        with Steerer(model, d, layer, 1.0) as steerer:
            steerer.set_prefill_mask(steer)
            positions = (attn.cumsum(-1) - 1).clamp(min=0)  # left padding: count positions from each row's start
            logits = model(
                input_ids=ids.to(device), attention_mask=attn.to(device), position_ids=positions.to(device), logits_to_keep=1
            ).logits[:, -1]
        out.append(torch.softmax(logits.float(), dim=-1)[:, token_ids].cpu())
    return torch.cat(out)
