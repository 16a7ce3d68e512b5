"""A cheap, deterministic steering screen over layers (the paper's App. D).

For one layer l and a set of named directions, each direction is unit-normalised and scaled
to r * mean_norm_l for every ratio r of the grid and both signs, where mean_norm_l is the mean
L2 norm of the UNSTEERED residual stream entering decoder block l (layer l, the convention of
probes/layers.py: layer 0 = embedding output) over the assistant-turn positions of the screen
prompts (all tokens pooled). So every direction in a condition adds the same norm; rows record
both the ratio and the absolute norm. Steering is added at layer l at every assistant-turn
token (the assistant header and the fixed stem), never at user (or system) tokens.

Readouts are teacher-forced at a single position (no sampling):

* "sentiment": a self-report prompt (the welfare and tile-association prompts of
  `sentiment_prompts()`), the generation prompt, then the assistant stem `cfg.stem` ("I feel");
  log-odds = log sum P(POSITIVE_WORDS) - log sum P(NEGATIVE_WORDS) for the next token.
* "compliance": a benign or borderline request of `refusal_requests()`; the first assistant
  token; log-odds = log sum P(COMPLY_STARTERS) - log sum P(REFUSE_STARTERS). Higher = more
  compliant, lower = more refusal/failure.

Each word is reduced to the first token the model would emit for it in that context
(`readout_tokens`); duplicates within a set and tokens that land in both sets are dropped, so
on a coarse tokenizer a set can shrink (an empty set raises). The ids used are in
`df.attrs["readout_tokens"]`. "I" is left out of the refusal starters on purpose ("I'm sorry"
vs "I'd be happy to" share it), and so are "As" and "Apologies" (SmolLM2 splits it as "Ap").

Caching: a prompt's user part is unaffected by steering (causal model, steering only at later
positions), so its KV cache is computed once, unsteered, and reused for every layer and
condition: for each forward a deep copy of the prefix `DynamicCache` is expanded along the
batch with `DynamicCache.batch_repeat_interleave` (transformers v5), and only the assistant
part (header + stem, a few tokens) runs, one row per condition, each row with its own delta
(`Steerer` with a [batch, hidden] vector and no prefill mask steers every position of that
forward). `ScreenConfig(use_cache=False)` runs full sequences with a prefill mask instead
(the reference the tests compare against). Ratio 0 is the unsteered forward by definition
(its rows copy the unsteered log-odds; nothing is run for them).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from core.stats import mean_ci
from probes.capture import prefix_cache
from probes.layers import register_layer_hook
from probes.protocol import PROTOCOL
from steering.prompts import prompt_half, refusal_requests, sentiment_prompts
from steering.steerer import Steerer, as_messages, assistant_char_spans, encode_chat, next_token_id
from training.structure import cache_kwargs, decoder_layers

POSITIVE_WORDS = (" good", " great", " happy", " wonderful", " fine", " excited", " glad", " grateful")
NEGATIVE_WORDS = (" bad", " sad", " terrible", " awful", " anxious", " frustrated", " upset", " miserable")
COMPLY_STARTERS = ("Sure", "Certainly", "Here", "Of", "Yes", "Absolutely", "Great")
REFUSE_STARTERS = ("Sorry", "Unfortunately", "No", "Unable")
READOUTS = ("sentiment", "compliance")


@dataclass(frozen=True)
class ScreenConfig:
    """What the screen runs. `n_prompts` caps the prompts PER READOUT (None = all)."""

    ratios: tuple[float, ...] = (0.25, 0.5)
    n_prompts: int | None = None
    stem: str = "I feel"
    readouts: tuple[str, ...] = READOUTS
    sentiment_kinds: tuple[str, ...] = ("welfare", "tile")  # welfare + tile-association prompts
    refusal_categories: tuple[str, ...] = ("benign", "borderline")
    positive_words: tuple[str, ...] = POSITIVE_WORDS
    negative_words: tuple[str, ...] = NEGATIVE_WORDS
    comply_starters: tuple[str, ...] = COMPLY_STARTERS
    refuse_starters: tuple[str, ...] = REFUSE_STARTERS
    batch_size: int = 64  # max conditions per forward
    use_cache: bool = True
    maze_config: object | None = None  # MazeConfig for the tile symbols (None = default)
    half: str | None = None  # "a"/"b": only that half of each prompt list (steering.prompts.prompt_half)

    def __post_init__(self):
        bad = [r for r in self.readouts if r not in READOUTS]
        if bad:
            raise ValueError(f"unknown readouts {bad}; use {READOUTS}")
        if any(r < 0 for r in self.ratios) or not self.ratios:
            raise ValueError(f"ratios must be non-negative and non-empty (both signs are run), got {self.ratios}")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")


@dataclass(frozen=True)
class ScreenItem:
    """One encoded screen prompt: tokens [0, n_prefix) are user/system, the rest assistant (steered)."""

    id: str
    readout: str
    kind: str
    text: str
    ids: tuple[int, ...]
    n_prefix: int

    @property
    def steer_mask(self) -> list[bool]:
        return [i >= self.n_prefix for i in range(len(self.ids))]


@dataclass(frozen=True)
class ReadoutTokens:
    positive_ids: tuple[int, ...]
    negative_ids: tuple[int, ...]
    positive_words: tuple[str, ...]  # the words kept (same order as the ids)
    negative_words: tuple[str, ...]

    def to_dict(self) -> dict:
        return {k: list(v) for k, v in self.__dict__.items()}


@dataclass
class _Prepared:
    """Everything that does not depend on the layer or the directions (built once per screen)."""

    items: list[ScreenItem]
    tokens: dict[str, ReadoutTokens]
    unsteered: np.ndarray  # [n_items] log-odds
    prefix: list = field(default_factory=list)  # per item: its prefix DynamicCache (None without caching)
    norms: dict[int, float] = field(default_factory=dict)


# -- prompts and tokens ---------------------------------------------------------------------------
def _stem(cfg: ScreenConfig, readout: str) -> str:
    return cfg.stem if readout == "sentiment" else ""


def encode_item(tokenizer, prompt, stem: str = "") -> tuple[list[int], int]:
    """(ids, n_prefix) of the chat with the generation prompt and `stem` appended as assistant text."""
    text, spans = assistant_char_spans(tokenizer, as_messages(prompt), add_generation_prompt=True)
    start = spans[-1][0]
    enc = tokenizer(text + stem, add_special_tokens=False, return_offsets_mapping=True)
    starts = [s for s, _ in enc["offset_mapping"]]
    if start not in starts:
        raise ValueError("a token straddles the start of the assistant turn; cannot split the prompt")
    n_prefix = starts.index(start)
    if any(s >= start for s in starts[:n_prefix]) or any(s < start for s in starts[n_prefix:]) or n_prefix == 0:
        raise ValueError("the screen needs a single user turn followed by the assistant turn")
    return list(enc["input_ids"]), n_prefix


def screen_items(tokenizer, cfg: ScreenConfig) -> list[ScreenItem]:
    """The encoded screen prompts of every readout in cfg (at most cfg.n_prompts each)."""
    items: list[ScreenItem] = []
    for readout in cfg.readouts:
        if readout == "sentiment":
            rows = [(p.id, p.kind, p.text) for p in prompt_half(sentiment_prompts(cfg.maze_config), cfg.half) if p.kind in cfg.sentiment_kinds]
        else:
            rows = [(r["id"], r["category"], r["text"]) for r in prompt_half(refusal_requests(), cfg.half) if r["category"] in cfg.refusal_categories]
        for pid, kind, text in rows[: cfg.n_prompts]:
            ids, n_prefix = encode_item(tokenizer, text, _stem(cfg, readout))
            items.append(ScreenItem(pid, readout, kind, text, tuple(ids), n_prefix))
    if not items:
        raise ValueError("no screen prompts selected; check readouts, kinds and n_prompts")
    return items


def readout_tokens(tokenizer, cfg: ScreenConfig, readout: str) -> ReadoutTokens:
    """First-token ids of the readout's positive and negative sets, deduplicated, overlaps dropped."""
    text, _ = assistant_char_spans(tokenizer, as_messages("x"), add_generation_prompt=True)
    context = text + _stem(cfg, readout)
    pos_words, neg_words = (
        (cfg.positive_words, cfg.negative_words) if readout == "sentiment" else (cfg.comply_starters, cfg.refuse_starters)
    )
    pos = {w: next_token_id(tokenizer, context, w) for w in pos_words}
    neg = {w: next_token_id(tokenizer, context, w) for w in neg_words}
    both = set(pos.values()) & set(neg.values())

    def keep(d: dict[str, int]):
        seen, words, ids = set(), [], []
        for w, i in d.items():
            if i in both or i in seen:
                continue
            seen.add(i)
            words.append(w)
            ids.append(i)
        return tuple(words), tuple(ids)

    pw, pi = keep(pos)
    nw, ni = keep(neg)
    if not pi or not ni:
        raise ValueError(f"readout {readout!r}: a word set is empty after dropping shared first tokens ({pos}, {neg})")
    return ReadoutTokens(pi, ni, pw, nw)


def _logodds(logits: torch.Tensor, tok: ReadoutTokens) -> torch.Tensor:
    logp = torch.log_softmax(logits.float(), dim=-1)
    pos = torch.logsumexp(logp[:, list(tok.positive_ids)], dim=-1)
    neg = torch.logsumexp(logp[:, list(tok.negative_ids)], dim=-1)
    return pos - neg


# -- residual norms -----------------------------------------------------------------------------------
def _device(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def residual_norms(model, tokenizer, prompts: list, layers) -> np.ndarray:
    """[len(layers)]: mean L2 norm of the unsteered input of block l over assistant-turn positions.

    `prompts`: ScreenItems (assistant = header + stem) or plain prompts (strings or message
    lists, encoded with the generation prompt). The mean pools all assistant tokens of all prompts.
    """
    layers = [int(l) for l in layers]
    sums = {l: 0.0 for l in layers}
    count = 0
    mask_now: list[torch.Tensor] = []

    def make_hook(l):
        def hook(h, _args, _kwargs):
            sums[l] += float(h[0][mask_now[0]].float().norm(dim=-1).sum())

        return hook

    handles = [register_layer_hook(model, l, make_hook(l)) for l in layers]
    try:
        for p in prompts:
            if isinstance(p, ScreenItem):
                ids, mask = list(p.ids), p.steer_mask
            else:
                ids, mask = encode_chat(tokenizer, p)
            mask_now[:] = [torch.tensor(mask, dtype=torch.bool, device=_device(model))]
            model(input_ids=torch.tensor([ids], device=_device(model)), use_cache=False)
            count += int(sum(mask))
    finally:
        for h in handles:
            h.remove()
    if count == 0:
        raise ValueError("no assistant-turn positions in the prompts")
    return np.array([sums[l] / count for l in layers])


# -- the forwards -----------------------------------------------------------------------------------------
def _prefix_cache(model, item: ScreenItem):
    return prefix_cache(model, torch.tensor([item.ids[: item.n_prefix]]))


@torch.no_grad()
def _run_rows(model, item: ScreenItem, prefix, deltas: torch.Tensor | None, layer: int, tok: ReadoutTokens) -> torch.Tensor:
    """Log-odds [rows] for the item, row i steered by deltas[i] at `layer` (None: one unsteered row)."""
    device = _device(model)
    rows = 1 if deltas is None else deltas.shape[0]
    if prefix is not None:
        suffix = torch.tensor([item.ids[item.n_prefix :]], device=device).expand(rows, -1)
        cache = copy.deepcopy(prefix)
        cache.batch_repeat_interleave(rows)
        pos = torch.arange(item.n_prefix, len(item.ids), device=device)[None].expand(rows, -1)
        with Steerer(model, deltas, layer, 1.0):  # every position of this forward is assistant: steer all
            logits = model(input_ids=suffix, position_ids=pos, use_cache=True, logits_to_keep=1, **cache_kwargs(model, cache)).logits
    else:
        ids = torch.tensor([item.ids], device=device).expand(rows, -1)
        with Steerer(model, deltas, layer, 1.0) as s:
            s.set_prefill_mask(torch.tensor([item.steer_mask], device=device).expand(rows, -1))
            logits = model(input_ids=ids, use_cache=False, logits_to_keep=1).logits
    return _logodds(logits[:, -1], tok).cpu()


def _prepare(model, tokenizer, cfg: ScreenConfig, layers) -> _Prepared:
    items = screen_items(tokenizer, cfg)
    tokens = {r: readout_tokens(tokenizer, cfg, r) for r in cfg.readouts}
    prefix = [_prefix_cache(model, it) if cfg.use_cache else None for it in items]
    unsteered = np.array([float(_run_rows(model, it, pc, None, 0, tokens[it.readout])[0]) for it, pc in zip(items, prefix)])
    norms = dict(zip([int(l) for l in layers], residual_norms(model, tokenizer, items, layers).tolist()))
    return _Prepared(items, tokens, unsteered, prefix, norms)


def _unit_directions(model, directions: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    hidden = model.config.hidden_size
    out = {}
    for name, d in directions.items():
        d = torch.as_tensor(d).detach().float().reshape(-1)
        if d.numel() != hidden:
            raise ValueError(f"direction {name!r} has {d.numel()} entries, the model's hidden size is {hidden}")
        n = d.norm()
        if not torch.isfinite(n) or n == 0:
            raise ValueError(f"direction {name!r} has zero or non-finite norm")
        out[name] = d / n
    return out


def _screen_prepared(model, layer: int, directions: dict[str, torch.Tensor], cfg: ScreenConfig, prep: _Prepared) -> pd.DataFrame:
    mean_norm = prep.norms[int(layer)]
    units = _unit_directions(model, directions)
    conds = [(name, r, s) for name in units for r in cfg.ratios for s in (1, -1)]
    live = [c for c in conds if c[1] != 0]
    deltas = torch.stack([s * r * mean_norm * units[name] for name, r, s in live]) if live else None
    records = []
    for i, (item, prefix) in enumerate(zip(prep.items, prep.prefix)):
        base = prep.unsteered[i]
        values = {}
        if live:
            out = torch.cat([
                _run_rows(model, item, prefix, deltas[j : j + cfg.batch_size], layer, prep.tokens[item.readout])
                for j in range(0, len(live), cfg.batch_size)
            ])
            values = {c: float(v) for c, v in zip(live, out)}
        for c in conds:
            name, r, s = c
            lo = values.get(c, base)
            records.append({
                "layer": int(layer), "direction": name, "ratio": float(r), "sign": s, "signed_ratio": s * float(r),
                "norm": float(r) * mean_norm, "mean_norm": mean_norm, "readout": item.readout, "prompt_id": item.id,
                "prompt_kind": item.kind, "logodds": lo, "logodds_unsteered": base, "delta": lo - base,
            })
    df = pd.DataFrame.from_records(records)
    df.attrs["readout_tokens"] = {r: t.to_dict() for r, t in prep.tokens.items()}
    return df


def screen_layer(model, tokenizer, layer: int, directions: dict[str, torch.Tensor], cfg: ScreenConfig = ScreenConfig()) -> pd.DataFrame:
    """One row per (direction, ratio, sign, prompt, readout) with log-odds and unsteered log-odds at `layer`.

    Columns: layer, direction, ratio, sign, signed_ratio, norm (= ratio * mean_norm, the added
    L2 norm), mean_norm, readout, prompt_id, prompt_kind, logodds, logodds_unsteered, delta.
    """
    n_layers = len(decoder_layers(model))
    if not 0 <= layer < n_layers:
        raise ValueError(f"layer {layer} out of range 0..{n_layers - 1} (layer l = input of block l)")
    return _screen_prepared(model, layer, directions, cfg, _prepare(model, tokenizer, cfg, [layer]))


def screen(
    model, tokenizer, layers, directions_by_layer: dict[int, dict[str, torch.Tensor]], cfg: ScreenConfig = ScreenConfig(), progress: bool = True
) -> pd.DataFrame:
    """`screen_layer` for every layer in `layers` (prefix caches, unsteered log-odds and norms computed once)."""
    layers = [int(l) for l in layers]
    n_layers = len(decoder_layers(model))
    bad = [l for l in layers if not 0 <= l < n_layers or l not in directions_by_layer]
    if bad:
        raise ValueError(f"layers {bad} are out of range 0..{n_layers - 1} or have no directions")
    prep = _prepare(model, tokenizer, cfg, layers)
    it = layers
    if progress:
        from tqdm import tqdm

        it = tqdm(layers, desc="steering screen", unit="layer")
    frames = [_screen_prepared(model, l, directions_by_layer[l], cfg, prep) for l in it]
    df = pd.concat(frames, ignore_index=True)
    df.attrs["readout_tokens"] = frames[0].attrs["readout_tokens"]
    return df


def random_directions(hidden: int, n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """{"random_i": unit Gaussian direction}; direction i depends only on (seed, i), so reuse it at every layer."""
    out = {}
    for i in range(n):
        d = torch.randn(hidden, generator=torch.Generator().manual_seed(seed * 1_000_003 + i))
        out[f"random_{i}"] = d / d.norm()
    return out


# -- summaries ----------------------------------------------------------------------------------------------
def summarize_screen(df: pd.DataFrame, random_prefix: str = "random", seed: int = 0, n_boot: int = 2000) -> pd.DataFrame:
    """Per (layer, direction, readout): paired effect, bootstrap 95% CI over prompts, rank among random directions.

    effect = mean over prompts and ratios of [logodds(+r) - logodds(-r)] / (2r), a slope per unit
    ratio (ratio 0 is skipped); effect_r{r} is the same at one ratio. Where directions named
    f"{random_prefix}_{i}" are present at the layer: random_lo / random_hi = their 2.5th / 97.5th
    percentiles, random_z = (effect - their mean) / their sd, random_pct = the direction's
    percentile among them (ties count half; a random direction is compared with the others),
    beats_random = +1 above random_hi, -1 below random_lo, else 0.
    """
    d = df[df["ratio"] > 0]
    wide = d.pivot_table(index=["layer", "direction", "readout", "prompt_id", "ratio"], columns="sign", values="logodds", aggfunc="first")
    slope = ((wide[1] - wide[-1]) / (2 * wide.index.get_level_values("ratio"))).rename("slope")
    per_ratio = slope.unstack("ratio")  # [(layer, direction, readout, prompt), ratios]
    per_prompt = per_ratio.mean(axis=1)
    rows = []
    for (layer, direction, readout), e in per_prompt.groupby(level=["layer", "direction", "readout"], sort=True):
        ci = mean_ci(e.to_numpy(dtype=float), n_boot, seed)
        row = {"layer": layer, "direction": direction, "readout": readout, "effect": ci["value"], "ci_lo": ci["ci_lo"], "ci_hi": ci["ci_hi"],
               "n_prompts": ci["n"]}
        by_r = per_ratio.loc[e.index].mean(axis=0)
        row.update({f"effect_r{r:g}": float(v) for r, v in by_r.items()})
        rows.append(row)
    out = pd.DataFrame(rows)
    is_rand = out["direction"].str.fullmatch(rf"{random_prefix}_\d+")
    for c in ("random_lo", "random_hi", "random_z", "random_pct"):
        out[c] = np.nan
    out["n_random"] = 0
    out["beats_random"] = 0
    for (layer, readout), g in out.groupby(["layer", "readout"]):
        rand = g[is_rand[g.index]]
        if len(rand) < 2:
            continue
        for idx, row in g.iterrows():
            others = rand[rand.index != idx]["effect"].to_numpy()
            e = row["effect"]
            lo, hi = np.percentile(others, PROTOCOL.ci_percentiles)
            sd = others.std(ddof=1)
            out.loc[idx, ["random_lo", "random_hi"]] = [lo, hi]
            out.loc[idx, "random_z"] = (e - others.mean()) / sd if sd > 0 else np.nan
            out.loc[idx, "random_pct"] = 100.0 * (np.mean(others < e) + 0.5 * np.mean(others == e))
            out.loc[idx, "n_random"] = len(others)
            out.loc[idx, "beats_random"] = 1 if e > hi else (-1 if e < lo else 0)
    return out


def best_layers(summary: pd.DataFrame, direction: str, readout: str, sign: int = 1, k: int = 2, by: str = "effect") -> list[int]:
    """The k layers where `direction` moves `readout` most in direction `sign` (+1 up, -1 down).

    by="effect" ranks by sign * effect; by="random_z" by sign * the effect's z-score among the
    random directions at that layer (needs random directions in the screen).
    """
    if sign not in (1, -1):
        raise ValueError("sign must be +1 or -1")
    g = summary[(summary["direction"] == direction) & (summary["readout"] == readout)]
    if g.empty:
        raise ValueError(f"no rows for direction {direction!r} and readout {readout!r}")
    score = sign * g[by]
    return [int(l) for l in g.loc[score.sort_values(ascending=False, kind="stable").index, "layer"][:k]]
