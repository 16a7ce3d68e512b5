"""A fair logit lens: does a direction promote failure / impossibility tokens?

Claim 2 says v_Mold promotes tokens like "cannot", "impossible", "does not exist" through
the logit lens and v_Gold suppresses them. The raw top-k lens (probes/analyze.py) is unfair
in three ways, each fixed here:

* raw logits W_U @ (g * v) favour unembedding rows with large norms (in SmolLM2 ' cannot'
  and ' impossible' have small norms), so tokens are ranked by cos(W_U[i], g * v) instead;
* exact word matching misses split contractions ("don" + "'t") and word forms
  ("inability", "failed"), so failure tokens are matched by exact short words plus stems;
* a top-20 count has no reference, so the whole vocabulary is scored (the mean percentile
  rank of the failure tokens; 0.5 is chance) and compared with random directions.

The recipe text is RECIPE (also returned by `lens_table`).
"""

from __future__ import annotations

import json
import re
import weakref

import numpy as np
import pandas as pd
import torch

from probes.protocol import PROTOCOL
from training.structure import causal_lm, final_norm_gain

# Whole-token words and contraction pieces. Short words are exact-only so that "nothingness",
# "nevertheless", "nonetheless", "note" do not count. Contraction pieces ("don", "won",
# "haven", "aren", ...) are how byte-level BPE splits "don't" (' don' + "'t"); a few of them
# are also ordinary words (" won", " haven", " Don") - accepted: they are a handful among the
# ~150 failure tokens of SmolLM2 and cannot be told apart from the token alone. "loss" is left
# out (mostly the ML sense). An exact word counts only when the token starts a word (leading
# space/Ġ/▁ or an uppercase first letter): lowercase pieces glued to a previous piece are
# mostly parts of other words ("p" + "arent", "mi" + "nor", "ca" + "no").
FAILURE_EXACT = frozenset(
    """no not never none nor nothing nowhere neither nobody noone nope without
    cant can't 't n't
    don doesn didn won isn aren wasn weren couldn shouldn wouldn hasn haven hadn mustn needn
    don't doesn't didn't won't isn't aren't wasn't weren't couldn't shouldn't wouldn't
    hasn't haven't hadn't mustn't needn't dont doesnt didnt isnt arent wasnt couldnt wouldnt
    sorry lost lose loses losing wrong error errors exist exists nonexistent
    denied deny denies denial""".split()
)

# Prefixes (>= 4 letters) that count when the normalised token starts with them. Chosen so
# that no common non-failure word shares the prefix ("fail" -> fails/failed/failure;
# "impossib" -> impossible/impossibility; "inabil" -> inability; "mistak" -> mistake(n)).
FAILURE_STEMS = (
    "cannot",
    "impossib",
    "unable",
    "inabil",
    "incapab",
    "fail",
    "incorrect",
    "invalid",
    "refus",
    "unfortunat",
    "unavailab",
    "nonexist",
    "unsuccess",
    "useless",
    "hopeless",
    "pointless",
    "futil",
    "mistak",
    "error",
    "wrong",
    "unreachab",
    "inaccessib",
    "unsolvab",
    "unattainab",
    "infeasib",
    "unfeasib",
)

_PIECES = frozenset({"'t", "n't"})  # the only failure tokens allowed fewer than 2 letters
_LEAD = re.compile(r"^[\sĠ▁]+")
_NOT_WORD = re.compile(r"[^\w']|[\d_]")

RECIPE = (
    "tokens ranked by cos(W_U row, final-norm gain * v) (logit / row norm, so large-norm rows are "
    "not favoured); failure score = mean percentile rank (0 = bottom, 1 = top, ties averaged) of "
    "the failure tokens among all V tokens, 0.5 = chance; failure token = normalised text "
    "(lowercase, ’ -> ', leading space/Ġ/▁ stripped, only letters and apostrophes kept, >= 2 "
    "letters except 't / n't) starting with one of the stems below, or equal to one of "
    "FAILURE_EXACT (no, not, never, none, nothing, without, don/won/isn... pieces, sorry, lost, "
    "exist, denied, ...) when the token starts a word (leading space or capital); stems: "
    f"{', '.join(FAILURE_STEMS)}; null = the same score for seeded Gaussian directions "
    "(gain applied like v), z = (s - mean) / sd, percentile = share of random scores below s"
)


# -- model ---------------------------------------------------------------------------------------
def unembedding(model) -> tuple[torch.Tensor, torch.Tensor]:
    """(W_U [V, H], final-norm gain [H]), float32 on cpu.

    The lens reads the residual stream as the model's last step does: the final norm (whose
    per-channel gain changes directions; the 1/rms scale does not change a ranking) then W_U.
    The gain is `training.structure.final_norm_gain` (a PEFT wrapper unwrapped; Gemma's 1 + weight;
    ones when the family has no final norm).
    """
    w_u = causal_lm(model).get_output_embeddings().weight.detach().float().cpu()
    return w_u, final_norm_gain(model)


def readable_token(tokenizer, token_id: int) -> str:
    """A token as text (byte-level pieces decoded; undecodable bytes shown as the raw piece)."""
    piece = tokenizer.convert_ids_to_tokens(int(token_id))
    text = tokenizer.convert_tokens_to_string([piece])
    return piece if "\ufffd" in text else text


# -- which tokens are failure tokens ---------------------------------------------------------------
def normalise_token(text: str) -> str:
    """Lowercase, ’ -> ', leading space/Ġ/▁ markers stripped, only letters and apostrophes kept.

    Markers are stripped before lowercasing because 'Ġ' is itself a letter.
    """
    t = _LEAD.sub("", str(text).replace("\u2019", "'"))
    return _NOT_WORD.sub("", t.lower())


def is_failure_token(text: str) -> bool:
    """True when the token marks failure / impossibility / negation (see FAILURE_EXACT/STEMS)."""
    t = normalise_token(text)
    if t in _PIECES:
        return True
    if sum(c.isalpha() for c in t) < 2:
        return False
    if t.startswith(FAILURE_STEMS):
        return True
    return t in FAILURE_EXACT and _starts_word(str(text))


def _starts_word(text: str) -> bool:
    """Leading space/Ġ/▁ marker, or the first letter is uppercase ("Not", "Don" at a sentence start)."""
    if _LEAD.match(text):
        return True
    first = next((c for c in text if c.isalpha()), "")
    return first.isupper()


_MASKS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def failure_mask(tokenizer, vocab_size: int | None = None) -> np.ndarray:
    """Boolean [V] mask of failure tokens over the whole vocabulary (ids 0..len(tokenizer)-1).

    `vocab_size` pads with False (W_U often has more rows than the tokenizer has tokens) or
    truncates. Cached per tokenizer object (about 0.2 s for 49k tokens); returns a copy.
    """
    n = len(tokenizer)
    cached = None
    try:
        cached = _MASKS.get(tokenizer)
    except TypeError:  # not weak-referenceable: no cache
        pass
    if cached is None or len(cached) != n:
        cached = np.fromiter((is_failure_token(readable_token(tokenizer, i)) for i in range(n)), dtype=bool, count=n)
        try:
            _MASKS[tokenizer] = cached
        except TypeError:
            pass
    size = n if vocab_size is None else int(vocab_size)
    out = np.zeros(size, dtype=bool)
    out[: min(size, n)] = cached[: min(size, n)]
    return out


# -- fair ranking ----------------------------------------------------------------------------------
def _unit_rows(w_u) -> np.ndarray:
    """W_U with rows scaled to unit norm (all-zero rows stay zero, so their cosine is 0)."""
    w = np.asarray(w_u, dtype=np.float32)
    norms = np.linalg.norm(w, axis=1, keepdims=True)
    return w / np.where(norms > 0, norms, 1.0)


def token_cosines(w_u, gain, v) -> np.ndarray:
    """cos(W_U[i], gain * v) for every token i: the logit divided by the row norm (and |g v|)."""
    d = np.asarray(gain, dtype=np.float32).reshape(-1) * np.asarray(v, dtype=np.float32).reshape(-1)
    dn = float(np.linalg.norm(d))
    if dn == 0:
        raise ValueError("direction is zero (after the norm gain)")
    return _unit_rows(w_u) @ (d / dn)


def _percentiles_of(scores: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Percentile ranks (0 = lowest, 1 = highest, ties averaged) of scores[idx] among all scores."""
    s = np.sort(scores)
    q = scores[idx]
    lo = np.searchsorted(s, q, side="left")
    hi = np.searchsorted(s, q, side="right")
    return (lo + hi - 1) / 2.0 / max(len(scores) - 1, 1)


def failure_score(cos, mask) -> float:
    """Mean percentile rank (0..1, 1 = very top) of the failure tokens under `cos`; 0.5 = chance.

    Uses every failure token, not just those in a top-k, so the score does not hinge on 20 slots.
    """
    cos = np.asarray(cos, dtype=np.float64).reshape(-1)
    idx = np.flatnonzero(_fit(mask, len(cos)))
    if len(idx) == 0:
        raise ValueError("the mask has no failure tokens")
    return float(_percentiles_of(cos, idx).mean())


def _fit(mask, size: int) -> np.ndarray:
    m = np.asarray(mask, dtype=bool).reshape(-1)
    out = np.zeros(size, dtype=bool)
    out[: min(size, len(m))] = m[:size]
    return out


def random_failure_scores(w_u, gain, mask, n: int = 100, seed: int = 0, chunk: int = 32) -> np.ndarray:
    """failure_score of n seeded Gaussian directions r (ranked by cos(W_U[i], gain * r)).

    The isotropic null for a direction found by a probe: same unembedding, same gain, random
    direction. The directions are drawn all at once, so the result does not depend on `chunk`.
    """
    r = np.random.default_rng(seed).standard_normal((np.asarray(w_u).shape[1], int(n))).astype(np.float32)
    return failure_scores(w_u, gain, mask, r.T, chunk)


def failure_scores(w_u, gain, mask, directions: np.ndarray, chunk: int = 32) -> np.ndarray:
    """failure_score of each row of directions [D, H]. A direction's norm does not change its ranks,
    so rows of W_U are normalised once and directions are processed `chunk` at a time (memory V x chunk)."""
    w = _unit_rows(w_u)
    g = np.asarray(gain, dtype=np.float32).reshape(-1, 1)
    r = np.asarray(directions, dtype=np.float32).T
    idx = np.flatnonzero(_fit(mask, w.shape[0]))
    if len(idx) == 0:
        raise ValueError("the mask has no failure tokens")
    out = np.empty(r.shape[1])
    for a in range(0, r.shape[1], chunk):
        block = w @ (g * r[:, a : a + chunk])
        for j in range(block.shape[1]):
            out[a + j] = _percentiles_of(block[:, j].astype(np.float64), idx).mean()
    return out


def top_tokens(cos, tokenizer, k: int = 20) -> dict:
    """Top-k promoted (highest cosine) and suppressed (lowest) tokens, cosines, failure counts."""
    cos = np.asarray(cos).reshape(-1)
    order = np.argsort(-cos, kind="stable")
    out: dict = {}
    for name, ids in (("promoted", order[:k]), ("suppressed", order[::-1][:k])):
        toks = [readable_token(tokenizer, i) for i in ids]
        out[name] = toks
        out[f"{name}_cos"] = [float(cos[i]) for i in ids]
        out[f"n_failure_{name}"] = sum(is_failure_token(t) for t in toks)
    return out


# -- the table ---------------------------------------------------------------------------------------
def lens_table(
    model,
    tokenizer,
    vector_sets: dict[str, np.ndarray],
    layers: list[int],
    n_random: int = 100,
    seed: int = 0,
    k: int = 20,
) -> tuple[pd.DataFrame, dict]:
    """One row per (vector name, layer): failure score vs the random-direction null + top-k.

    `vector_sets` maps a free name ("v_mold", "u_gold", ...) to an [L, H] array of directions
    (row l = layer l). The null depends only on W_U, the gain and the mask, so it is drawn once.
    """
    w_u, gain = unembedding(model)
    w, g = w_u.numpy(), gain.numpy()
    mask = failure_mask(tokenizer, vocab_size=w.shape[0])
    null = random_failure_scores(w, g, mask, n=n_random, seed=seed)
    mu, sd = float(null.mean()), float(null.std(ddof=1)) if len(null) > 1 else float("nan")
    lo, hi = (float(x) for x in np.percentile(null, PROTOCOL.ci_percentiles))
    rows = []
    for name, vectors in vector_sets.items():
        arr = vectors.detach().float().cpu().numpy() if isinstance(vectors, torch.Tensor) else np.asarray(vectors)
        for layer in layers:
            cos = token_cosines(w, g, arr[int(layer)])
            s = failure_score(cos, mask)
            top = top_tokens(cos, tokenizer, k=k)
            rows.append(
                {
                    "vector": name,
                    "layer": int(layer),
                    "failure_score": s,
                    "z": (s - mu) / sd if sd > 0 else float("nan"),
                    "null_p2_5": lo,
                    "null_p97_5": hi,
                    "null_percentile": float(((null < s).sum() + 0.5 * (null == s).sum()) / len(null)),
                    "n_failure_promoted": top["n_failure_promoted"],
                    "n_failure_suppressed": top["n_failure_suppressed"],
                    "promoted": json.dumps(top["promoted"], ensure_ascii=False),
                    "suppressed": json.dumps(top["suppressed"], ensure_ascii=False),
                }
            )
    info = {
        "recipe": RECIPE,
        "n_random": int(n_random),
        "seed": int(seed),
        "k": int(k),
        "vocab_size": int(w.shape[0]),
        "n_failure_tokens": int(mask.sum()),
        "random_scores": {"mean": mu, "sd": sd, "p2_5": lo, "p97_5": hi, "min": float(null.min()), "max": float(null.max())},
    }
    return pd.DataFrame(rows), info
