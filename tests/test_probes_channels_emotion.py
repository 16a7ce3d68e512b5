"""Outlier channels, the three spaces, and the emotion nulls, on hand-built numbers."""

import numpy as np

from probes.channels import Spaces, standardise, top_channel_share, top_channels, whitener
from probes.emotion import bootstrap_over_emotions, random_pair_null, split_stories, valence_direction


def test_top_channel_share_and_standardise():
    v = np.array([[10.0, 0, 0, 0, 0, 0, 1, 1], [1.0] * 8])
    share = top_channel_share(v, k=1)
    assert np.isclose(share[0], 100 / 102) and np.isclose(share[1], 1 / 8)
    assert top_channels(v, k=2)[0][0] == 0
    sd = np.array([100.0, 1, 1, 1, 1, 1, 1, 1])
    z = standardise(v[0], sd)
    assert np.isclose(z[0], 0.1) and np.isclose(z[6], 1.0)  # the outlier channel no longer dominates
    assert standardise(np.ones(2), np.array([0.0, 2.0]))[0] == 0  # a dead channel is zeroed, not divided by 0


def test_whitening_makes_a_dominant_nuisance_direction_irrelevant():
    rng = np.random.default_rng(0)
    n, h = 900, 20
    labels = np.repeat(["mold", "gold", "path"], n // 3)
    d = rng.standard_normal(h)
    d /= np.linalg.norm(d)
    x = rng.standard_normal((n, h)) + 30.0 * rng.standard_normal((n, 1)) * d  # one huge correlated direction
    w = whitener(x, labels)
    cov = np.cov((x @ w).T)
    assert np.allclose(np.diag(cov), 1.0, atol=0.25)
    sp = Spaces(np.ones((1, h)), w[None])
    assert np.allclose(sp.apply(x[:2], 0, "whitened"), x[:2] @ w) and np.allclose(sp.apply(x[:2], 0, "raw"), x[:2])


def test_emotion_nulls_and_bootstrap():
    rng = np.random.default_rng(1)
    h = 50
    axis = rng.standard_normal(h)
    valence = {f"e{i}": v for i, v in enumerate(np.linspace(-1, 1, 12))}
    evecs = {k: v * axis + 0.3 * rng.standard_normal(h) for k, v in valence.items()}
    null = random_pair_null(evecs, axis, -axis, valence, draws=200, seed=0)
    assert np.isclose(null["cos_pair"], -1.0)
    # a pair ALONG the valence axis: r near 1; randomly oriented pairs stay far below it
    gap = np.array([np.dot(e, axis) / np.linalg.norm(e) for e in evecs.values()]) * 2
    r = np.corrcoef(list(valence.values()), gap)[0, 1]
    assert r > 0.9 and null["valence_r_hi"] < r
    cg = np.array([np.dot(e, axis) for e in evecs.values()])
    ci = bootstrap_over_emotions(cg, -cg, np.array(list(valence.values())), draws=200)
    assert ci["valence_r_ci"][0] > 0.8 and ci["slope_ci"][0] <= -1.0 + 1e-9 <= ci["slope_ci"][1] + 1e-9


def test_story_halves_and_valence_direction():
    stories = {"emotions": {"joy": {"valence": 1, "stories": ["a", "b", "c"]}, "sad": {"valence": -1, "stories": ["d", "e"]}}}
    assert split_stories(stories, "a")["emotions"]["joy"]["stories"] == ["a", "c"]
    assert split_stories(stories, "b")["emotions"]["sad"]["stories"] == ["e"]
    e = valence_direction({"joy": np.array([[2.0, 0.0]]), "sad": np.array([[0.0, 1.0]])}, {"joy": 1, "sad": -1}, np.array([[0.0, 1.0]]))
    assert np.allclose(e, [2.0, 0.0])  # the neutral basis direction is projected out


def test_cpu_small_steers_the_trained_model_too():
    from welfare_axis.pipeline import get_preset

    assert get_preset("cpu-small").steer.trained and get_preset("cpu-small").steer.n_random >= 10
