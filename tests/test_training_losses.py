"""Advantages, the dual-clip surrogate, the equalized entropy bonus and the loss, against hand-computed values."""

import math

import pytest
import torch

from training.losses import (
    cosine_factor,
    dr_grpo_advantages,
    dual_clip_objective,
    entropy,
    equalized_entropy,
    grpo_advantages,
    kl_divergence,
    policy_loss,
    reinforce_advantages,
    returns_to_go,
)


def H(*p):
    return -sum(x * math.log(x) for x in p)


def test_dr_grpo_advantage_is_return_minus_group_mean_without_std():
    r = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 6.0]])
    assert torch.allclose(dr_grpo_advantages(r), torch.tensor([[-1.0, 0.0, 1.0], [-2.0, -2.0, 4.0]]))


def test_grpo_advantage_divides_by_group_std():
    r = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 6.0]])  # unbiased stds 1 and sqrt(12)
    a = grpo_advantages(r, eps=0.0)
    assert torch.allclose(a[0], torch.tensor([-1.0, 0.0, 1.0]))
    assert torch.allclose(a[1], torch.tensor([-2.0, -2.0, 4.0]) / math.sqrt(12))


def test_reinforce_returns_to_go_and_per_position_group_baseline():
    rewards = torch.tensor([[[1.0, 0.0, 2.0], [0.0, 0.0, 0.0]]])  # 1 group, 2 episodes, 3 moves
    assert torch.equal(returns_to_go(rewards), torch.tensor([[[3.0, 2.0, 2.0], [0.0, 0.0, 0.0]]]))
    assert torch.allclose(reinforce_advantages(rewards), torch.tensor([[[1.5, 1.0, 1.0], [-1.5, -1.0, -1.0]]]))


def test_discounted_returns_to_go():
    rewards = torch.tensor([[[1.0, 0.0, 2.0], [0.0, 4.0, 0.0]]])
    # gamma 0.5: G_0 = 1 + 0.5*0 + 0.25*2 = 1.5, G_1 = 0 + 0.5*2 = 1, G_2 = 2
    assert torch.allclose(returns_to_go(rewards, 0.5), torch.tensor([[[1.5, 1.0, 2.0], [2.0, 4.0, 0.0]]]))
    assert torch.equal(returns_to_go(rewards, 0.0), rewards)  # each move keeps only its own reward
    assert torch.allclose(reinforce_advantages(rewards, 0.0), torch.tensor([[[0.5, -2.0, 1.0], [-0.5, 2.0, -1.0]]]))


@pytest.mark.parametrize(
    "ratio,adv,expected",
    [
        (1.5, 1.0, 1.2),  # clipped above
        (0.5, 1.0, 0.5),  # min picks the unclipped ratio
        (0.5, -1.0, -0.8),  # clipped below for A < 0
        (1.5, -1.0, -1.5),  # unclipped, above the dual-clip floor
        (5.0, -1.0, -3.0),  # dual clip: max(min(rA, clip(r)A), cA) = c A with c = 3
        (1.0, 2.0, 2.0),
    ],
)
def test_dual_clip_surrogate(ratio, adv, expected):
    out = dual_clip_objective(torch.tensor([math.log(ratio)]), torch.tensor([0.0]), torch.tensor([adv]), 0.2, 3.0)
    assert out.item() == pytest.approx(expected, rel=1e-6)


def test_equalized_entropy_counts_only_kinds_with_two_or_more_neighbours():
    logp = torch.log(torch.tensor([0.5, 0.25, 0.125, 0.125]))
    # kinds: N,E path; S mold; W gold -> only path (k=2): entropy of (2/3, 1/3)
    assert equalized_entropy(logp, torch.tensor([0, 0, 1, 2])).item() == pytest.approx(H(2 / 3, 1 / 3), rel=1e-5)
    # two pairs: (N,E) -> (2/3,1/3); (S,W) -> (1/2,1/2)
    assert equalized_entropy(logp, torch.tensor([0, 0, 1, 1])).item() == pytest.approx(H(2 / 3, 1 / 3) + H(0.5, 0.5), rel=1e-5)
    # all four the same kind: the plain entropy
    assert equalized_entropy(logp, torch.tensor([1, 1, 1, 1])).item() == pytest.approx(entropy(logp).item(), rel=1e-5)
    # all different: nothing to equalize
    assert equalized_entropy(logp, torch.tensor([0, 1, 2, 1])).item() == pytest.approx(H(0.25 / 0.375, 0.125 / 0.375), rel=1e-5)
    assert equalized_entropy(logp.unsqueeze(0), torch.tensor([[0, 1, 2, 3]])).item() == 0.0


def test_equalized_entropy_is_batched_and_differentiable():
    logits = torch.randn(2, 3, 4, requires_grad=True)
    nb = torch.randint(0, 3, (2, 3, 4))
    out = equalized_entropy(torch.log_softmax(logits, -1), nb)
    assert out.shape == (2, 3) and torch.isfinite(out).all()
    out.sum().backward()
    assert torch.isfinite(logits.grad).all()


def test_policy_loss_hand_value_with_entropy_bonus_and_constant_norm():
    logp4 = torch.full((1, 2, 4), math.log(0.25))
    actions = torch.tensor([[0, 3]])
    old = torch.full((1, 2), math.log(0.25))
    adv = torch.tensor([2.0])
    nb = torch.tensor([[[1, 1, 1, 1], [0, 1, 2, 1]]])  # eq. entropy ln 4 and ln 2
    loss, parts = policy_loss(logp4, actions, old, adv, nb, algo="dr_grpo", norm=10.0, beta=0.5)
    expected = -((2.0 + 2.0) + 0.5 * (math.log(4) + math.log(2))) / 10.0
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert parts["entropy"] == pytest.approx(math.log(4), rel=1e-6)
    # REINFORCE with per-token advantages: -(sum A_t logp_t)/norm
    loss_r, _ = policy_loss(logp4, actions, old, torch.tensor([[1.0, -3.0]]), nb, algo="reinforce", norm=2.0, beta=0.0)
    assert loss_r.item() == pytest.approx(-((1.0 - 3.0) * math.log(0.25)) / 2.0, rel=1e-6)


def test_policy_gradient_pushes_up_positive_advantage_actions():
    logits = torch.zeros(1, 1, 4, requires_grad=True)
    logp4 = torch.log_softmax(logits, -1)
    loss, _ = policy_loss(logp4, torch.tensor([[2]]), logp4.detach().gather(-1, torch.tensor([[[2]]])).squeeze(-1), torch.tensor([1.0]), torch.tensor([[[0, 1, 2, 1]]]), algo="dr_grpo", norm=1.0, beta=0.0)
    loss.backward()
    assert logits.grad[0, 0, 2] < 0 and (logits.grad[0, 0, [0, 1, 3]] > 0).all()  # descent raises logit 2


def test_kl_and_cosine():
    p = torch.log(torch.tensor([0.5, 0.5, 1e-9, 1e-9]))
    assert kl_divergence(p, p).item() == pytest.approx(0.0, abs=1e-7)
    q = torch.log(torch.tensor([0.25, 0.25, 0.25, 0.25]))
    assert kl_divergence(p, q).item() == pytest.approx(math.log(2), rel=1e-4)
    assert cosine_factor(0, 10) == 1.0 and cosine_factor(5, 10) == pytest.approx(0.5) and cosine_factor(10, 10) == pytest.approx(0.0)
