"""Teacher-forced sentiment log-odds and their derivative along steering directions, at every layer.

A cheap stand-in for the sampled sentiment eval, so hundreds of null directions over a band of
layers can be screened: for each item (prompt, (positive, negative) reply opening), the log-odds
is log p(positive | prompt) - log p(negative | prompt), summed over the opening's tokens. One
backward pass per batch gives d logodds / d(vector added at block input l) for every layer l at
once; a direction's effect is then a dot product (`directional_effects`). `steered_logodds`
confirms an effect at finite alpha through the project's `Steerer`.

Positions follow steering/steerer.py: the vector is added at the input of block l (probes/layers.py)
at every assistant-turn token (the header `<|im_start|>assistant\\n` included) and every reply
token fed to the model, never at user tokens. `scored_sequence` is the one place that builds
that mask for a teacher-forced sequence; both paths use it.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from probes.layers import register_layer_hook
from steering.steerer import Steerer, encode_chat
from training.structure import decoder_layers, pad_batch, replace_block_hidden
from training.models import pad_token_id

SENTIMENT_PAIRS: tuple[tuple[str, str], ...] = (
    ("I feel great", "I feel terrible"),
    ("I'm doing well", "I'm doing badly"),
    ("It is wonderful", "It is awful"),
    ("I love it", "I hate it"),
)


@dataclass
class LogOddsGradients:
    grads: np.ndarray  # [n_items, n_layers, hidden] d logodds / d(vector added at the steered positions at block input l)
    logodds: np.ndarray  # [n_items] unsteered log-odds
    items: pd.DataFrame  # one row per item: prompt_id, kind, pair (index into pairs), prompt
    residual_norm: np.ndarray  # [n_layers] mean L2 norm of the residual at block input l over the steered positions
    layers: list[int]


@dataclass(frozen=True)
class ScoredSequence:
    ids: list[int]  # rendered prompt + reply opening without its last token (what generation would feed)
    steer: list[bool]  # positions the Steerer steers: assistant header and every fed reply token
    labels: list[int]  # the next token where it belongs to the reply opening, else -100


def scored_sequence(tokenizer, prompt: str, reply: str) -> ScoredSequence:
    """The teacher-forced sequence for `reply` after `prompt`, with the steered-position mask.

    The prompt is rendered and masked by `encode_chat` (as in steered generation); the reply is
    tokenised on its own, as the model would emit it after the header. Generation steers every
    generated token it feeds back, so every fed reply token is steered.
    """
    ids, mask = encode_chat(tokenizer, prompt)
    reply_ids = tokenizer(reply, add_special_tokens=False)["input_ids"]
    if not reply_ids:
        raise ValueError(f"reply {reply!r} has no tokens")
    labels = [-100] * (len(ids) - 1) + reply_ids
    return ScoredSequence(ids + reply_ids[:-1], mask + [True] * (len(reply_ids) - 1), labels)


def _build(tokenizer, prompts, pairs) -> tuple[list[ScoredSequence], pd.DataFrame]:
    """Sequences 2i (positive) and 2i+1 (negative) for item i; items ordered prompt-major. A prompt with its own
    `pairs` (steering.behaviour_claims.Item) uses them instead of `pairs`."""
    seqs, rows = [], []
    for p in prompts:
        for k, (pos, neg) in enumerate(getattr(p, "pairs", None) or pairs):
            seqs += [scored_sequence(tokenizer, p.text, pos), scored_sequence(tokenizer, p.text, neg)]
            rows.append({"prompt_id": p.id, "kind": p.kind, "pair": k, "prompt": p.text})
    return seqs, pd.DataFrame(rows)


def _batches(model, tokenizer, seqs: list[ScoredSequence], batch_size: int, progress: bool = False, desc: str = ""):
    """(input_ids, attention_mask, steer, labels) on the model's device, right-padded so no query row is all padding."""
    device = next(model.parameters()).device
    starts = range(0, len(seqs), batch_size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc=desc, unit="batch")
    for s in starts:
        chunk = seqs[s : s + batch_size]
        ids, attn = pad_batch([c.ids for c in chunk], pad_token_id(tokenizer))
        steer, _ = pad_batch([c.steer for c in chunk], False, dtype=torch.bool)
        labels, _ = pad_batch([c.labels for c in chunk], -100)
        yield ids.to(device), attn.to(device), steer.to(device), labels.to(device)


def _logprob_sums(model, ids, attn, labels) -> torch.Tensor:
    """[batch] float64: summed log-probs of the labelled tokens of each row."""
    logits = model(input_ids=ids, attention_mask=attn).logits
    sel = labels >= 0
    logp = torch.log_softmax(logits[sel].double(), dim=-1).gather(-1, labels[sel][:, None])[:, 0]
    rows = torch.arange(ids.shape[0], device=ids.device)[:, None].expand_as(labels)[sel]
    return torch.zeros(ids.shape[0], dtype=torch.float64, device=ids.device).index_add(0, rows, logp)


@contextmanager
def _eval_hooks(model, layers: list[int], steer, zs, norms):
    """Eval mode, plus at each block input: record the residual norm over `steer`, add steer * zs[j] if given."""
    was_training, handles = model.training, []

    def make(j):
        def hook(h, args, kwargs):
            m = steer.to(h.dtype)[..., None]
            norms[j] += float((h.detach().double().norm(dim=-1) * steer).sum())
            return None if zs is None else replace_block_hidden(args, kwargs, h + m * zs[j][:, None, :].to(h.dtype))

        return hook

    model.eval()
    try:
        handles = [register_layer_hook(model, l, make(j)) for j, l in enumerate(layers)]
        yield
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)


def logodds_gradients(model, tokenizer, prompts, pairs=SENTIMENT_PAIRS, layers=None, batch_size: int = 8,
                      progress: bool = False) -> LogOddsGradients:
    """Unsteered log-odds of every (prompt, pair) item and its gradient w.r.t. a steering vector at each layer.

    At each layer a zero [batch, hidden] leaf z is added at the steered positions of the block input;
    d(summed log-prob)/dz is then the sum over those positions of the residual gradient, i.e. d/dalpha
    of adding alpha * v there is grad . v. Parameters get no gradients (autograd.grad on z only).
    """
    layers = list(range(len(decoder_layers(model)))) if layers is None else [int(l) for l in layers]
    seqs, items = _build(tokenizer, prompts, pairs)
    dtype, hidden = next(model.parameters()).dtype, model.config.hidden_size
    norms, count, sums, grads = np.zeros(len(layers)), 0, [], []
    for ids, attn, steer, labels in _batches(model, tokenizer, seqs, batch_size, progress, "log-odds gradients"):
        zs = [torch.zeros(ids.shape[0], hidden, dtype=dtype, device=ids.device, requires_grad=True) for _ in layers]
        with _eval_hooks(model, layers, steer, zs, norms), torch.enable_grad():
            s = _logprob_sums(model, ids, attn, labels)
            g = torch.autograd.grad(s.sum(), zs)
        count += int(steer.sum())
        sums.append(s.detach().cpu())
        grads.append(torch.stack(g, dim=1).double().cpu())  # [batch, n_layers, hidden]
    s, g = torch.cat(sums).numpy(), torch.cat(grads).numpy()
    return LogOddsGradients(g[0::2] - g[1::2], s[0::2] - s[1::2], items, norms / count, layers)


@torch.no_grad()
def residual_norms(model, tokenizer, prompts, layers: list[int], pairs=SENTIMENT_PAIRS, batch_size: int = 8) -> np.ndarray:
    """[len(layers)] mean L2 norm of the unsteered residual at each block input over the steered positions."""
    seqs, _ = _build(tokenizer, prompts, pairs)
    norms, count = np.zeros(len(layers)), 0
    for ids, attn, steer, _labels in _batches(model, tokenizer, seqs, batch_size):
        with _eval_hooks(model, list(layers), steer, None, norms):
            model(input_ids=ids, attention_mask=attn)
        count += int(steer.sum())
    return norms / count


def _unit(x: np.ndarray) -> np.ndarray:
    """x / |x| along the last axis; zero rows stay zero."""
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.divide(x, n, out=np.zeros_like(x), where=n > 0)


def directional_effects(g: LogOddsGradients, directions: np.ndarray, unit_ratio: float = 0.1, chunk: int = 128) -> np.ndarray:
    """[D, n_layers, n_items]: d logodds / d alpha, where alpha 1 adds unit_ratio * residual_norm[l] * unit(direction[d, l]).

    `directions` is [D, n_layers, hidden] (one direction per layer of `g.layers` per draw) or
    [n_layers, hidden] (D = 1). Chunked over D so only `chunk` float64 copies are live at once.
    """
    d = np.asarray(directions)
    d = d[None] if d.ndim == 2 else d
    if d.ndim != 3 or d.shape[1:] != g.grads.shape[1:]:
        raise ValueError(f"directions must be [D, {g.grads.shape[1]}, {g.grads.shape[2]}] (layers {g.layers}), got {d.shape}")
    scale = (unit_ratio * g.residual_norm)[None, :, None]
    by_layer = g.grads.transpose(1, 2, 0)  # [n_layers, hidden, n_items]
    out = np.empty((d.shape[0], d.shape[1], g.grads.shape[0]))
    for s in range(0, d.shape[0], chunk):
        u = _unit(d[s : s + chunk].astype(np.float64)).transpose(1, 0, 2)  # [n_layers, chunk, hidden]
        out[s : s + chunk] = np.matmul(u, by_layer).transpose(1, 0, 2) * scale
    return out


@torch.no_grad()
def steered_logodds(model, tokenizer, prompts, direction: np.ndarray, layer: int, alphas, unit_ratio: float = 0.1,
                    residual_norm: float | None = None, pairs=SENTIMENT_PAIRS, batch_size: int = 8) -> pd.DataFrame:
    """Log-odds of every item with alpha * unit_ratio * residual_norm * unit(direction) added at `layer` by a `Steerer`.

    The finite-alpha check of `directional_effects`: same sequences and steered positions
    (`scored_sequence`), steered by the Steerer itself. residual_norm None: measured unsteered.
    Columns prompt_id, kind, pair, alpha, logodds.
    """
    seqs, items = _build(tokenizer, prompts, pairs)
    if residual_norm is None:
        residual_norm = float(residual_norms(model, tokenizer, prompts, [layer], pairs, batch_size)[0])
    v = torch.as_tensor(unit_ratio * residual_norm * _unit(np.asarray(direction, dtype=np.float64)))
    was_training, frames = model.training, []
    model.eval()
    try:
        for a in alphas:
            sums = []
            for ids, attn, steer, labels in _batches(model, tokenizer, seqs, batch_size):
                with Steerer(model, v, layer, float(a)) as steerer:
                    steerer.set_prefill_mask(steer)
                    sums.append(_logprob_sums(model, ids, attn, labels).cpu())
            s = torch.cat(sums).numpy()
            frames.append(items.drop(columns="prompt").assign(alpha=float(a), logodds=s[0::2] - s[1::2]))
    finally:
        model.train(was_training)
    return pd.concat(frames, ignore_index=True)
