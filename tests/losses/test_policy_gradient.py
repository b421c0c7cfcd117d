"""Hand-derived checks of the PPO losses and the advantage helpers (ALGORITHMS.md §3.1, §3.3).

Masked mean = token mean within each row, then the (weighted) mean over rows.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from constrained_align.losses import (
    clipped_value_loss,
    gae,
    group_relative_advantages,
    lagrangian_advantages,
    ppo_clip_loss,
)

F64 = torch.float64


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=F64)


def scalar(value: float) -> torch.Tensor:
    return torch.tensor(value, dtype=F64)


# Row 0: ρ = [1.5, 0.5, 1.1], A = [1, −1, 2]. Row 1: ρ = [0.5, pad, pad], A = [1, pad, pad].
# Padded tokens carry extreme values that must not leak into anything.
RATIO = torch.tensor([[1.5, 0.5, 1.1], [0.5, 50.0, 0.01]], dtype=F64)
ADV = torch.tensor([[1.0, -1.0, 2.0], [1.0, 100.0, -100.0]], dtype=F64)
MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]], dtype=F64)
OLD = torch.tensor([[-1.0, -2.0, -0.5], [-3.0, -1.0, -2.0]], dtype=F64)


def test_ppo_clip_loss_hand_values() -> None:
    """ε = 0.2, per token min(ρA, clip(ρ, 0.8, 1.2) A):

    row 0: ρ=1.5, A=1: min(1.5, 1.2) = 1.2 (clipped);  ρ=0.5, A=−1: min(−0.5, −0.8) = −0.8
           (clipped);  ρ=1.1, A=2: min(2.2, 2.2) = 2.2.  Row mean 2.6 / 3 = 0.8666667.
    row 1: ρ=0.5, A=1: min(0.5, 0.8) = 0.5 (unclipped side binds). Row mean 0.5.
    Loss = −(0.8666667 + 0.5) / 2 = −0.6833333.  clipfrac = (2/3 + 0) / 2 = 1/3.
    approx_kl: ½ log²ρ = ½(0.4054651)² = 0.0822010, ½(0.6931472)² = 0.2402265,
               ½(0.0953102)² = 0.0045420; rows 0.1089898 and 0.2402265; mean 0.1746082.
    ratio_mean: rows 3.1 / 3 = 1.0333333 and 0.5; mean 0.7666667.
    """
    logprobs = OLD + RATIO.log()
    loss, metrics = ppo_clip_loss(logprobs, OLD, ADV, MASK, clip_range=0.2)
    assert_close(loss, scalar(-0.6833333), atol=1e-6, rtol=0)
    assert metrics["loss/policy"] == pytest.approx(-0.6833333, abs=1e-6)
    assert metrics["policy/clipfrac"] == pytest.approx(1.0 / 3.0, abs=1e-9)
    assert metrics["policy/approx_kl"] == pytest.approx(0.1746082, abs=1e-6)
    assert metrics["policy/ratio_mean"] == pytest.approx(0.7666667, abs=1e-6)


def test_ppo_clip_loss_gradient() -> None:
    """d loss / d log π_t = −ρ_t A_t / (T_b · B) where the unclipped term is the min, else 0.

    row 0: tokens 0, 1 clipped → 0; token 2: −1.1 · 2 / (3 · 2) = −0.3666667.
    row 1: token 0: −0.5 · 1 / (1 · 2) = −0.25; padded tokens 0.
    """
    logprobs = (OLD + RATIO.log()).requires_grad_()
    loss, _ = ppo_clip_loss(logprobs, OLD, ADV, MASK, clip_range=0.2)
    loss.backward()
    expected = torch.tensor([[0.0, 0.0, -0.3666667], [-0.25, 0.0, 0.0]], dtype=F64)
    assert_close(logprobs.grad, expected, atol=1e-6, rtol=0)


def test_ppo_clip_loss_weighted_and_clipfrac() -> None:
    """weight = [3, 1]: loss = −(3 · 0.8666667 + 0.5) / 4 = −0.775; clipfrac = 3 · (2/3) / 4 = 0.5.

    At ε = 0.6 every ρ lies in [0.4, 1.6], so clipfrac = 0 and the loss is the plain
    surrogate: row 0 (1.5 − 0.5 + 2.2)/3 = 1.0666667, row 1 0.5, loss −0.7833333.
    A zero advantage never counts as clipped.
    """
    logprobs = OLD + RATIO.log()
    loss, metrics = ppo_clip_loss(logprobs, OLD, ADV, MASK, weight=t(3.0, 1.0))
    assert_close(loss, scalar(-0.775), atol=1e-6, rtol=0)
    assert metrics["policy/clipfrac"] == pytest.approx(0.5, abs=1e-9)

    wide, m_wide = ppo_clip_loss(logprobs, OLD, ADV, MASK, clip_range=0.6)
    assert_close(wide, scalar(-0.7833333), atol=1e-6, rtol=0)
    assert m_wide["policy/clipfrac"] == 0.0

    _, m_zero = ppo_clip_loss(logprobs, OLD, torch.zeros_like(ADV), MASK)
    assert m_zero["policy/clipfrac"] == 0.0


def test_clipped_value_loss_hand_values() -> None:
    """c = 5, V_old = 0. Row 0: V = [1, 10, −6], G = [2, 4, −7]; row 1: V = [3, pad, pad], G = 1.

    row 0: t0 V=1 inside the clip: max(1, 1) = 1;  t1 V=10 → V_clip=5: max(36, 1) = 36;
           t2 V=−6 → V_clip=−5: max((−6+7)² = 1, (−5+7)² = 4) = 4 (clipped term used).
           Row mean 41/3 = 13.6666667.
    row 1: V=3: (3 − 1)² = 4. Row mean 4.
    Loss = ½ · (13.6666667 + 4) / 2 = 4.4166667.  clipfrac = (1/3 + 0) / 2 = 1/6.
    Gradient = (V − G) / (T_b · B) on unclipped-max tokens, 0 where the clipped term is used:
    row 0: [(1−2)/6, (10−4)/6, 0] = [−0.1666667, 1.0, 0]; row 1: [(3−1)/2, 0, 0] = [1, 0, 0].
    """
    values = torch.tensor([[1.0, 10.0, -6.0], [3.0, 100.0, -100.0]], dtype=F64)
    values.requires_grad_()
    old = torch.zeros(2, 3, dtype=F64)
    returns = torch.tensor([[2.0, 4.0, -7.0], [1.0, 0.0, 0.0]], dtype=F64)
    loss, metrics = clipped_value_loss(values, old, returns, MASK, clip_range=5.0)
    assert_close(loss, scalar(4.4166667), atol=1e-6, rtol=0)
    assert metrics["loss/value"] == pytest.approx(4.4166667, abs=1e-6)
    assert metrics["value/clipfrac"] == pytest.approx(1.0 / 6.0, abs=1e-9)
    loss.backward()
    expected = torch.tensor([[-1.0 / 6.0, 1.0, 0.0], [1.0, 0.0, 0.0]], dtype=F64)
    assert_close(values.grad, expected, atol=1e-6, rtol=0)

    weighted, _ = clipped_value_loss(values, old, returns, MASK, weight=t(1.0, 2.0))
    # ½ · (1 · 13.6666667 + 2 · 4) / 3 = 3.6111111
    assert_close(weighted, scalar(3.6111111), atol=1e-6, rtol=0)


def test_gae_hand_values_with_padding() -> None:
    """γ = 1, λ = 0.95.

    Row 0 (3 tokens): r = [0, 0, 1], V = [0.5, 0.6, 0.7], V beyond the end = 0.
      δ2 = 1 + 0 − 0.7 = 0.3;  δ1 = 0 + 0.7 − 0.6 = 0.1;  δ0 = 0 + 0.6 − 0.5 = 0.1.
      A2 = 0.3;  A1 = 0.1 + 0.95 · 0.3 = 0.385;  A0 = 0.1 + 0.95 · 0.385 = 0.46575.
      G = A + V = [0.96575, 0.985, 1.0].
    Row 1 (2 tokens + 1 pad): r = [0, 2, 9], V = [1.0, 0.5, 3.0]; the pad's r and V are ignored.
      δ1 = 2 + 0 − 0.5 = 1.5;  δ0 = 0 + 0.5 − 1.0 = −0.5.
      A = [−0.5 + 0.95 · 1.5, 1.5, 0] = [0.925, 1.5, 0];  G = [1.925, 2.0, 0].
    """
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 9.0]], dtype=F64)
    values = torch.tensor([[0.5, 0.6, 0.7], [1.0, 0.5, 3.0]], dtype=F64, requires_grad=True)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=0.95)
    assert_close(adv, torch.tensor([[0.46575, 0.385, 0.3], [0.925, 1.5, 0.0]], dtype=F64))
    assert_close(ret, torch.tensor([[0.96575, 0.985, 1.0], [1.925, 2.0, 0.0]], dtype=F64))
    assert not adv.requires_grad and not ret.requires_grad


def test_gae_discount_and_empty_row() -> None:
    """γ = 0.9, λ = 0.5 on row 0 of the previous test (γλ = 0.45):

    δ2 = 1 − 0.7 = 0.3;  δ1 = 0.9 · 0.7 − 0.6 = 0.03;  δ0 = 0.9 · 0.6 − 0.5 = 0.04.
    A2 = 0.3;  A1 = 0.03 + 0.45 · 0.3 = 0.165;  A0 = 0.04 + 0.45 · 0.165 = 0.11425.
    A zero-length row gets all-zero advantages and returns.
    """
    rewards = torch.tensor([[0.0, 0.0, 1.0], [5.0, 5.0, 5.0]], dtype=F64)
    values = torch.tensor([[0.5, 0.6, 0.7], [1.0, 1.0, 1.0]], dtype=F64)
    mask = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]], dtype=F64)
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.5)
    assert_close(adv, torch.tensor([[0.11425, 0.165, 0.3], [0.0, 0.0, 0.0]], dtype=F64))
    assert_close(ret, torch.tensor([[0.61425, 0.765, 1.0], [0.0, 0.0, 0.0]], dtype=F64))


def test_group_relative_advantages_unsorted_groups() -> None:
    """scores [1, 10, 3, 20, 5], groups [7, 2, 7, 2, 7] (unsorted, non-contiguous ids).

    Group 7 = {1, 3, 5}, mean 3 → [−2, 0, 2]; group 2 = {10, 20}, mean 15 → [−5, 5].
    Result [−2, −5, 0, 5, 2].
    Std scaling (population std, eps = 0): group 7 var (4 + 0 + 4)/3 = 8/3, std 1.6329932;
    group 2 var 25, std 5 → [−1.2247449, −1, 0, 1, 1.2247449].
    """
    scores = t(1.0, 10.0, 3.0, 20.0, 5.0)
    groups = torch.tensor([7, 2, 7, 2, 7])
    adv = group_relative_advantages(scores, groups)
    assert_close(adv, t(-2.0, -5.0, 0.0, 5.0, 2.0))
    scaled = group_relative_advantages(scores, groups, scale_by_std=True, eps=0.0)
    assert_close(scaled, t(-1.2247449, -1.0, 0.0, 1.0, 1.2247449), atol=1e-6, rtol=0)
    default_eps = group_relative_advantages(scores, groups, scale_by_std=True)
    assert_close(default_eps[1], scalar(-5.0 / (5.0 + 1e-6)))


def test_group_relative_advantages_weighted() -> None:
    """weights [2, 1, 1, 3, 1] on the same scores and groups.

    Group 7: mean (2·1 + 3 + 5)/4 = 2.5 → [−1.5, 0.5, 2.5];
             var (2·2.25 + 0.25 + 6.25)/4 = 2.75, std 1.6583124.
    Group 2: mean (10 + 3·20)/4 = 17.5 → [−7.5, 2.5]; var (56.25 + 3·6.25)/4 = 18.75,
             std 4.3301270.
    Scaled: [−0.9045340, −1.7320508, 0.3015113, 0.5773503, 1.5075567].
    Integer weights equal repeating rows: row 0 twice and row 3 three times.
    """
    scores = t(1.0, 10.0, 3.0, 20.0, 5.0)
    groups = torch.tensor([7, 2, 7, 2, 7])
    w = t(2.0, 1.0, 1.0, 3.0, 1.0)
    adv = group_relative_advantages(scores, groups, weight=w)
    assert_close(adv, t(-1.5, -7.5, 0.5, 2.5, 2.5))
    scaled = group_relative_advantages(scores, groups, weight=w, scale_by_std=True, eps=0.0)
    expected = t(-0.9045340, -1.7320508, 0.3015113, 0.5773503, 1.5075567)
    assert_close(scaled, expected, atol=1e-6, rtol=0)

    rep_scores = t(1.0, 1.0, 10.0, 3.0, 20.0, 20.0, 20.0, 5.0)
    rep_groups = torch.tensor([7, 7, 2, 7, 2, 2, 2, 7])
    rep = group_relative_advantages(rep_scores, rep_groups, scale_by_std=True, eps=0.0)
    assert_close(rep[[0, 2, 3, 4, 7]], scaled)


def test_lagrangian_advantages() -> None:
    """A_r = [1, 2], A_c = [3, −1], λ = 0.5: [(1 − 1.5)/1.5, (2 + 0.5)/1.5] = [−1/3, 5/3].

    λ = 0 returns A_r; a tensor λ works the same; negative λ raises.
    """
    a_r, a_c = t(1.0, 2.0), t(3.0, -1.0)
    assert_close(lagrangian_advantages(a_r, a_c, 0.5), t(-1.0 / 3.0, 5.0 / 3.0))
    assert_close(lagrangian_advantages(a_r, a_c, scalar(0.5)), t(-1.0 / 3.0, 5.0 / 3.0))
    assert_close(lagrangian_advantages(a_r, a_c, 0.0), a_r)
    with pytest.raises(ValueError):
        lagrangian_advantages(a_r, a_c, -0.1)
    with pytest.raises(ValueError):
        lagrangian_advantages(a_r, a_c, scalar(-1.0))
    assert math.isclose(float(lagrangian_advantages(t(4.0), t(0.0), 3.0)), 1.0)
