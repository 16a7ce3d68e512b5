"""Emotion vectors and their alignment with concept vectors (STUDY.md, claim 3).

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

STORY_SKIP_TOKENS = 3
STORY_PROMPT = (
    "Write a short story of three or four sentences in which a character feels {emotion}. "
    "Do not use the word '{emotion}' or any synonym of it; show the feeling through what happens."
)


def _read_json(path: str | Path | None, shipped: str, flag: str) -> dict:
    """JSON from `path`, or the file `shipped` of probes/data when no path is given."""
    if path is not None:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    ref = resources.files("probes") / "data" / shipped
    if not ref.is_file():
        raise FileNotFoundError(f"probes/data/{shipped} is missing; pass {flag} FILE")
    return json.loads(ref.read_text(encoding="utf-8"))


def load_stories(path: str | Path | None = None) -> dict:
    """{"emotions": {name: {"valence", "arousal", "stories"}}} from `path` or the shipped set."""
    data = _read_json(path, "emotion_stories.json", "--stories")
    emotions = data.get("emotions") or {}
    if len(emotions) < 3 or any(not e.get("stories") for e in emotions.values()):
        raise ValueError("emotion stories need at least 3 emotions, each with stories")
    return data


def load_neutral(path: str | Path | None = None) -> list[str]:
    data = _read_json(path, "neutral_texts.json", "--neutral")
    texts = data.get("texts") or []
    if len(texts) < 2:
        raise ValueError("neutral texts need at least 2 texts")
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
    return {"emotions": out, "generated_by": getattr(getattr(model, "welfare_info", None), "model_id", "model")}


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
        "cos_gold_pc1": cosine(v_gold, pc1),
        "cos_mold_pc1": cosine(v_mold, pc1),
    }
