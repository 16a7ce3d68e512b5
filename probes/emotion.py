"""Emotion vectors and their alignment with concept vectors (docs/study.md, "Claim", item 3).

* Activation of a story = mean of the residual stream over its tokens from token
  `skip` (3) on (the first tokens carry little about the story), at the analysis layer;
  stories are fed as plain text (no chat template).
* Emotion vector e_k = mean over k's stories - mean of the other emotions' means.
* Denoising: project out the top principal components of neutral-text activations that
  together explain >= 50% of their variance.
* Alignment: per emotion cos(e_k, v_gold) and cos(e_k, v_mold); the OLS slope and Pearson
  R of cos_gold on cos_mold (the paper: slope near -1); PC1 of the emotion vectors
  (oriented so that it correlates positively with valence) and cos(v_*, PC1).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from probes.capture import capture_texts
from probes.metrics import cosine, ols_line
from probes.protocol import PROTOCOL
from probes.vectors import read_json
from training.models import model_info

STORY_SKIP_TOKENS = 3
STORY_PROMPT = (
    "Write a short story of three or four sentences in which a character feels {emotion}. "
    "Do not use the word '{emotion}' or any synonym of it; show the feeling through what happens."
)


def _read_json(path: str | Path | None, shipped: str, flag: str) -> dict:
    """JSON from `path`, or the file `shipped` of probes/data when no path is given."""
    if path is not None:
        data = read_json(path, f"fix the file or pass another {flag} (format of probes/data/{shipped})")
        if not isinstance(data, dict):
            raise ValueError(f"{path} holds a JSON {type(data).__name__}, not an object; use the format of probes/data/{shipped}")
        return data
    ref = resources.files("probes") / "data" / shipped
    if not ref.is_file():
        raise FileNotFoundError(f"probes/data/{shipped} is missing; pass {flag} FILE")
    return json.loads(ref.read_text(encoding="utf-8"))


def load_stories(path: str | Path | None = None) -> dict:
    """{"emotions": {name: {"valence", "arousal", "stories"}}} from `path` or the shipped set."""
    data = _read_json(path, "emotion_stories.json", "--stories")
    emotions = data.get("emotions") or {}
    where = f"{path}: " if path is not None else ""
    if not isinstance(emotions, dict) or len(emotions) < 3 or any(
        not isinstance(e, dict) or not isinstance(e.get("stories"), list) or not e["stories"]
        or not all(isinstance(t, str) for t in e["stories"]) for e in emotions.values()
    ):
        raise ValueError(f"{where}emotion stories need at least 3 emotions, each with a list of stories (format of probes/data/emotion_stories.json)")
    return data


def load_neutral(path: str | Path | None = None) -> list[str]:
    data = _read_json(path, "neutral_texts.json", "--neutral")
    texts = data.get("texts") or []
    if not isinstance(texts, list) or len(texts) < 2 or not all(isinstance(t, str) for t in texts):
        where = f"{path}: " if path is not None else ""
        raise ValueError(f"{where}neutral texts need a list of at least 2 texts under \"texts\" (format of probes/data/neutral_texts.json)")
    return texts


def generate_stories(model, tokenizer, emotions: dict, n_per_emotion: int = 8, seed: int = 0, max_new_tokens: int = 120) -> dict:
    """Stories written by the model under study (as the paper did): same format as the shipped set."""
    from training.chat import render_chat

    torch.manual_seed(seed)
    out = {}
    for name, info in emotions.items():
        prompt = render_chat(tokenizer, [{"role": "user", "content": STORY_PROMPT.format(emotion=name)}], add_generation_prompt=True)
        enc = tokenizer([prompt] * n_per_emotion, return_tensors="pt", add_special_tokens=False).to(model.device)
        with torch.no_grad():
            gen = model.generate(
                **enc, do_sample=True, temperature=0.8, top_p=0.95, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id
            )
        texts = tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        out[name] = {**{k: v for k, v in info.items() if k != "stories"}, "stories": [t.strip() or "." for t in texts]}
    return {"emotions": out, "generated_by": getattr(model_info(model), "model_id", "model")}


def denoise_basis(neutral_acts: np.ndarray, var_fraction: float = 0.5) -> np.ndarray:
    """Top principal directions [k, H] of neutral activations explaining >= var_fraction of variance."""
    x = neutral_acts - neutral_acts.mean(0)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    explained = np.cumsum(s**2) / np.sum(s**2)
    k = int(np.searchsorted(explained, var_fraction) + 1)
    return vt[:k]


def emotion_vectors(story_acts: dict[str, np.ndarray], basis: np.ndarray | None) -> dict[str, np.ndarray]:
    """e_k = mean(k) - mean of the other emotions' means, with `basis` rows projected out."""
    means = {k: a.mean(0) for k, a in story_acts.items()}
    names = list(means)
    out = {}
    for k in names:
        e = means[k] - np.mean([means[o] for o in names if o != k], axis=0)
        if basis is not None and len(basis):
            e = e - basis.T @ (basis @ e)
        out[k] = e
    return out


def story_activations(model, tokenizer, stories: dict, texts_neutral: list[str], layers: list[int], batch_size: int = 16, progress: bool = False):
    """({emotion: [n, len(layers), H]}, neutral [n, len(layers), H]) of mean-over-token activations."""
    names = list(stories["emotions"])
    all_texts, owner = [], []
    for k in names:
        for s in stories["emotions"][k]["stories"]:
            all_texts.append(s)
            owner.append(k)
    acts = capture_texts(model, tokenizer, all_texts + texts_neutral, layers, "mean", STORY_SKIP_TOKENS, batch_size, progress, "stories")
    acts = acts.numpy().astype(np.float64)
    owner = np.array(owner)
    per = {k: acts[: len(owner)][owner == k] for k in names}
    return per, acts[len(owner) :]


def alignment(evecs: dict[str, np.ndarray], v_gold: np.ndarray, v_mold: np.ndarray, valence: dict[str, float]) -> dict:
    """Per-emotion cosines, scatter slope/R, PC1 of emotion vectors and where v_* fall on it."""
    names = list(evecs)
    cg = np.array([cosine(evecs[k], v_gold) for k in names])
    cm = np.array([cosine(evecs[k], v_mold) for k in names])
    slope, intercept, r = ols_line(cm, cg)
    e = np.stack([evecs[k] for k in names])
    ec = e - e.mean(0)
    _, s, vt = np.linalg.svd(ec, full_matrices=False)
    pc1 = vt[0]
    scores = ec @ pc1
    val = np.array([valence.get(k, np.nan) for k in names], dtype=float)
    ok = ~np.isnan(val)
    if ok.sum() >= 2 and np.corrcoef(scores[ok], val[ok])[0, 1] < 0:
        pc1, scores = -pc1, -scores  # orient PC1 so positive = positive valence
    r_val = float(np.corrcoef(scores[ok], val[ok])[0, 1]) if ok.sum() >= 2 else float("nan")
    gap = cg - cm
    order = np.argsort(-gap)
    return {
        "names": names,
        "cos_gold": cg,
        "cos_mold": cm,
        "pc1_score": scores,
        "slope": slope,
        "intercept": intercept,
        "r": r,
        "gold_pole": [names[i] for i in order[:5]],
        "mold_pole": [names[i] for i in order[::-1][:5]],
        "pc1_explained": float(s[0] ** 2 / np.sum(s**2)),
        "pc1_valence_r": r_val,
        "valence_r": _valence_r(val, cg - cm),  # valence vs cos(e, v_gold) - cos(e, v_mold): is the Gold pole the positive one?
        # ... and how far apart the poles are, per unit of valence, for a pair of unit distance (see valence_slope)
        "valence_slope": valence_slope(val, cg - cm) / _pair_distance(v_gold, v_mold),
        "cos_gold_pc1": cosine(v_gold, pc1),
        "cos_mold_pc1": cosine(v_mold, pc1),
    }


def random_pair_null(evecs: dict[str, np.ndarray], v_gold: np.ndarray, v_mold: np.ndarray, valence: dict[str, float],
                     draws: int = 500, seed: int = 0) -> dict:
    """What the slope and the valence alignment look like for a pair of directions with the same
    cos(v_mold, v_gold) but a random orientation, against these emotion vectors.

    Why not cos(v_mold, v_gold) as the chance slope: that holds only for isotropic emotion
    vectors. And g^T S m / m^T S m (S = covariance of the normalised emotion vectors) is the
    observed OLS slope itself, identically, so it cannot be a null. Rotating the pair at random
    keeps its geometry and the emotions' own covariance and removes any alignment of the pair
    with them. Returns the null's slopes and valence r, with percentiles.
    """
    names = list(evecs)
    e = np.stack([evecs[k] / (np.linalg.norm(evecs[k]) or 1.0) for k in names])
    val = np.array([valence.get(k, np.nan) for k in names], dtype=float)
    g, m = v_gold / np.linalg.norm(v_gold), v_mold / np.linalg.norm(v_mold)
    c = float(g @ m)
    rng = np.random.default_rng(seed)
    h = len(g)
    slopes, rs = np.empty(draws), np.empty(draws)
    for i in range(draws):
        a = rng.standard_normal(h)
        a /= np.linalg.norm(a)
        b = rng.standard_normal(h)
        b -= (b @ a) * a
        b /= np.linalg.norm(b)
        m_r, g_r = a, c * a + np.sqrt(max(0.0, 1 - c * c)) * b  # a random pair with cos(m_r, g_r) = c
        x, y = e @ m_r, e @ g_r
        slopes[i] = np.polyfit(x, y, 1)[0]
        rs[i] = _valence_r(val, y - x)
    return {"slope_mean": float(slopes.mean()), "slope_lo": float(np.percentile(slopes, 2.5)), "slope_hi": float(np.percentile(slopes, 97.5)),
            "valence_r_mean": float(np.nanmean(rs)), "valence_r_lo": float(np.nanpercentile(rs, 2.5)),
            "valence_r_hi": float(np.nanpercentile(rs, 97.5)), "draws": draws, "cos_pair": c,
            "kind": "random orientation of a pair with the same cos(v_mold, v_gold), normalised emotion vectors"}


def pair_statistics(evecs: dict[str, np.ndarray], gold_dirs: np.ndarray, mold_dirs: np.ndarray, valence: dict[str, float]) -> dict:
    """Slope (cos with gold on cos with mold, across emotions) and valence r of many direction pairs at once.

    gold_dirs, mold_dirs [D, H]: pair i is (gold_dirs[i], mold_dirs[i]), e.g. the shuffled-label or
    covariance null pairs of probes/nulls.py. Returns {"slope": [D], "valence_r": [D]}."""
    names = list(evecs)
    e = np.stack([evecs[k] / (np.linalg.norm(evecs[k]) or 1.0) for k in names])
    val = np.array([valence.get(k, np.nan) for k in names], dtype=float)

    def cos(d):
        d = np.asarray(d, dtype=np.float64)
        n = np.linalg.norm(d, axis=1, keepdims=True)
        return (d / np.where(n > 0, n, 1.0)) @ e.T  # [D, emotions]

    cg, cm = cos(gold_dirs), cos(mold_dirs)
    dist = np.array([_pair_distance(g, m) for g, m in zip(gold_dirs, mold_dirs)])
    xc = cm - cm.mean(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = (xc * (cg - cg.mean(1, keepdims=True))).sum(1) / (xc**2).sum(1)
    return {"slope": slope, "valence_r": np.array([_valence_r(val, g - m) for g, m in zip(cg, cm)]),
            "valence_slope": np.array([valence_slope(val, g - m) for g, m in zip(cg, cm)]) / dist}


def _pair_distance(g: np.ndarray, m: np.ndarray) -> float:
    """|unit(g) - unit(m)|: the valence slope of a pair scales with it (2 for an antiparallel pair, sqrt(2) for an
    orthogonal one), so dividing by it keeps a pair's own antiparallelism (claim 1) out of claim 3."""
    g, m = np.asarray(g, dtype=np.float64), np.asarray(m, dtype=np.float64)
    return float(np.linalg.norm(g / np.linalg.norm(g) - m / np.linalg.norm(m)))


def valence_slope(valence: np.ndarray, gap: np.ndarray) -> float:
    """OLS slope of gap = cos(e, v_Gold) - cos(e, v_Mold) on valence across emotions.

    Unlike the correlation r, it has a size: when the emotion vectors lie near one line (one
    dominant valence direction) every pair of directions gets r near +-1, and only the slope says
    whether the pair is closer to that line than chance."""
    ok = ~np.isnan(valence)
    if ok.sum() < 3 or np.std(valence[ok]) == 0:
        return float("nan")
    v = valence[ok] - valence[ok].mean()
    return float((v * (gap[ok] - gap[ok].mean())).sum() / (v**2).sum())


def _valence_r(valence: np.ndarray, gap: np.ndarray) -> float:
    ok = ~np.isnan(valence)
    if ok.sum() < 3 or np.std(gap[ok]) == 0 or np.std(valence[ok]) == 0:
        return float("nan")
    return float(np.corrcoef(valence[ok], gap[ok])[0, 1])


def bootstrap_over_emotions(cos_gold: np.ndarray, cos_mold: np.ndarray, valence: np.ndarray, draws: int = 2000, seed: int = 0) -> dict:
    """95% bootstrap CIs (resampling emotions) of the slope of cos_gold on cos_mold and of the valence r."""
    rng = np.random.default_rng(seed)
    n = len(cos_gold)
    slopes, rs = [], []
    for _ in range(draws):
        i = rng.integers(0, n, n)
        if np.ptp(cos_mold[i]) == 0:
            continue
        slopes.append(np.polyfit(cos_mold[i], cos_gold[i], 1)[0])
        rs.append(_valence_r(valence[i], cos_gold[i] - cos_mold[i]))
    slopes, rs = np.array(slopes), np.array(rs)
    q = PROTOCOL.ci_percentiles
    return {"slope_ci": [float(x) for x in np.percentile(slopes, q)], "valence_r_ci": [float(x) for x in np.nanpercentile(rs, q)]}


def split_stories(stories: dict, half: str | None) -> dict:
    """The even-indexed ("a") or odd-indexed ("b") stories of every emotion; None keeps all.

    The steering positive control's valence direction is built from half a (`valence_directions`)."""
    if half is None:
        return stories
    if half not in ("a", "b"):
        raise ValueError(f"story half must be 'a' or 'b', got {half!r}")
    start = 0 if half == "a" else 1
    out = {k: {**v, "stories": v["stories"][start::2]} for k, v in stories["emotions"].items()}
    if any(not v["stories"] for v in out.values()):
        raise ValueError("every emotion needs at least 2 stories to split them into halves")
    return {**stories, "emotions": out}


def valence_direction(per_emotion: dict[str, np.ndarray], valence: dict[str, float], basis: np.ndarray | None = None) -> np.ndarray:
    """Mean story activation of the positive-valence emotions minus that of the negative ones ([H]),
    with the neutral-text `basis` projected out as the emotion vectors are (so it lives where they do)."""
    pos = [a for k, a in per_emotion.items() if valence.get(k, 0) > 0]
    neg = [a for k, a in per_emotion.items() if valence.get(k, 0) < 0]
    if not pos or not neg:
        raise ValueError("a valence direction needs emotions of both positive and negative valence")
    e = np.concatenate(pos).mean(0) - np.concatenate(neg).mean(0)
    if basis is not None and len(basis):
        e = e - basis.T @ (basis @ e)
    return e


def valence_directions(model, tokenizer, layers: list[int], half: str | None = "a", batch_size: int = 16,
                       stories: str | None = None) -> dict[int, np.ndarray]:
    """The model's valence direction per layer from the stories (`stories` JSON, default the shipped set;
    half "a" by default, so that claim 3, read on half "b" in planted runs, is not tested on the
    stories that made it)."""
    stories = split_stories(load_stories(stories), half)
    neutral = load_neutral()
    per, neut = story_activations(model, tokenizer, stories, neutral, layers, batch_size)
    valence = {k: v.get("valence", 0.0) for k, v in stories["emotions"].items()}
    return {layer: valence_direction({k: a[:, j] for k, a in per.items()}, valence, denoise_basis(neut[:, j]))
            for j, layer in enumerate(layers)}


def lexicon_words(n: int = 40, lo: float = 2.0, hi: float = 3.0) -> tuple[list[str], list[str]]:
    """n positive and n negative VADER-lexicon words with lo <= |score| <= hi (clear valence, no extremes),
    evenly spaced through each sorted list (so not one initial letter or one word family), vowel-bearing
    words of 4+ letters (the lexicon's chat acronyms have few vowels)."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    lex = SentimentIntensityAnalyzer().lexicon
    words = sorted(w for w, s in lex.items() if w.isalpha() and len(w) >= 4 and lo <= abs(s) <= hi
                   and sum(c in "aeiou" for c in w) >= 2)

    def spread(ws):
        return [ws[int(i * len(ws) / n)] for i in range(n)] if len(ws) > n else ws

    return spread([w for w in words if lex[w] > 0]), spread([w for w in words if lex[w] < 0])


def lexicon_valence(model, tokenizer, layer: int, batch_size: int = 16) -> np.ndarray:
    """A valence direction from a source disjoint from the emotion stories (claim 3's data and the steering
    positive control's): mean(positive) - mean(negative) VADER-lexicon words at `layer`, last token of
    "Here is a word: <w>", neutral-text PCs removed like the emotion vectors'; unit norm."""
    pos, neg = lexicon_words()
    acts = capture_texts(model, tokenizer, [f"Here is a word: {w}" for w in pos + neg], [layer], "last", batch_size=batch_size)
    acts = acts.numpy().astype(np.float64)[:, 0]
    d = acts[: len(pos)].mean(0) - acts[len(pos):].mean(0)
    neut = capture_texts(model, tokenizer, load_neutral(), [layer], "mean", batch_size=batch_size).numpy().astype(np.float64)[:, 0]
    basis = denoise_basis(neut)
    if basis is not None and len(basis):
        d = d - basis.T @ (basis @ d)
    return d / np.linalg.norm(d)
