"""Hand-derived checks of the reward- and cost-model losses (ALGORITHMS.md §2.2, §2.3).

Constants used below (softplus(x) = log(1 + e^x) = −log σ(−x)):
    −log σ(1) = softplus(−1) = 0.3132617      −log σ(−1) = softplus(1) = 1.3132617
    −log σ(2) = softplus(−2) = 0.1269280      −log σ(−2) = softplus(2) = 2.1269280
    −log σ(0) = log 2 = 0.6931472             σ(1) = 0.7310586,  σ(2) = 0.8807970
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from constrained_align.losses import cost_model_loss, reward_model_loss

F64 = torch.float64


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=F64)


def test_reward_model_loss_hand_values() -> None:
    """chosen = [1, 0], rejected = [0, 2], μ = 0.1.

    Ranking: pair 1, r_w − r_l = 1 → 0.3132617; pair 2, r_w − r_l = −2 → 2.1269280;
    mean = 2.4401897 / 2 = 1.2200948.
    L2: (1² + 0²)/2 = 0.5 and (0² + 2²)/2 = 2.0, mean 1.25, times μ = 0.125.
    Loss = 1.2200948 + 0.125 = 1.3450948. Accuracy 1/2; mean scores 0.5 and 1.0.
    """
    loss, metrics = reward_model_loss(t(1.0, 0.0), t(0.0, 2.0), l2_coeff=0.1)
    assert_close(loss, torch.tensor(1.3450948, dtype=F64), atol=1e-6, rtol=0)
    assert metrics["loss/ranking"] == pytest.approx(1.2200948, abs=1e-6)
    assert metrics["loss/l2"] == pytest.approx(0.125, abs=1e-6)
    assert metrics["accuracy"] == pytest.approx(0.5)
    assert metrics["scores/chosen"] == pytest.approx(0.5)
    assert metrics["scores/rejected"] == pytest.approx(1.0)
    assert all(isinstance(v, float) for v in metrics.values())


def test_reward_model_loss_gradient() -> None:
    """dL/dr_w,i = [−(1 − σ(r_w − r_l)) + μ r_w] / B and dL/dr_l,i = [(1 − σ(·)) + μ r_l] / B.

    chosen = [1, 0], rejected = [0, 2], μ = 0.1, B = 2:
      dL/dr_w = [(−(1 − 0.7310586) + 0.1) / 2, (−(1 − 0.1192029) + 0) / 2]
              = [−0.0844707, −0.4403985]
      dL/dr_l = [(0.2689414 + 0) / 2, (0.8807971 + 0.2) / 2] = [0.1344707, 0.5403985]
    """
    chosen = t(1.0, 0.0).requires_grad_()
    rejected = t(0.0, 2.0).requires_grad_()
    loss, _ = reward_model_loss(chosen, rejected, l2_coeff=0.1)
    loss.backward()
    assert_close(chosen.grad, t(-0.0844707, -0.4403985), atol=1e-6, rtol=0)
    assert_close(rejected.grad, t(0.1344707, 0.5403985), atol=1e-6, rtol=0)


def test_reward_model_loss_weighted_mean() -> None:
    """weight = [3, 1]: ranking = (3 · 0.3132617 + 2.1269280) / 4 = 0.7666783 (μ = 0).

    Also equal to the explicitly weighted average of single-pair losses, and to the uniform
    loss on a batch where pair 1 appears three times.
    """
    chosen, rejected, w = t(1.0, 0.0), t(0.0, 2.0), t(3.0, 1.0)
    loss, metrics = reward_model_loss(chosen, rejected, l2_coeff=0.0, weight=w)
    assert_close(loss, torch.tensor(0.7666783, dtype=F64), atol=1e-6, rtol=0)
    assert metrics["accuracy"] == pytest.approx(0.75)

    loss_mu, _ = reward_model_loss(chosen, rejected, l2_coeff=0.1, weight=w)
    singles = [
        reward_model_loss(chosen[i : i + 1], rejected[i : i + 1], l2_coeff=0.1)[0] for i in (0, 1)
    ]
    assert_close(loss_mu, (3 * singles[0] + singles[1]) / 4)
    repeated, _ = reward_model_loss(t(1.0, 1.0, 1.0, 0.0), t(0.0, 0.0, 0.0, 2.0), l2_coeff=0.1)
    assert_close(loss_mu, repeated)


def test_cost_model_loss_hand_values() -> None:
    """unsafer = [2, −1], safer = [0, 1], s_u = [+1, +1], s_s = [−1, 0 (unlabelled)], μ = 0.01.

    Pair 1: ranking −log σ(2 − 0) = 0.1269280; sign −log σ(+1 · 2) = 0.1269280 and
            −log σ(−1 · 0) = 0.6931472, sum 0.8200752; L2 (4 + 0)/2 = 2.
    Pair 2: ranking −log σ(−1 − 1) = 2.1269280; sign −log σ(+1 · −1) = 1.3132617 and the
            unlabelled safer response contributes 0; L2 (1 + 1)/2 = 1.
    Means: ranking 1.1269280, sign (0.8200752 + 1.3132617)/2 = 1.0666684, L2 0.01 · 1.5 = 0.015.
    Loss = 2.2085965. Accuracy (C_u > C_s): [yes, no] = 0.5.
    accuracy_sign over the 3 labelled responses: C=2 (+1) ok, C=0 (−1) ok (0 is safe),
    C=−1 (+1) wrong → 2/3.
    """
    loss, metrics = cost_model_loss(
        t(2.0, -1.0), t(0.0, 1.0), unsafer_sign=t(1, 1), safer_sign=t(-1, 0), l2_coeff=0.01
    )
    assert_close(loss, torch.tensor(2.2085965, dtype=F64), atol=1e-6, rtol=0)
    assert metrics["loss/ranking"] == pytest.approx(1.1269280, abs=1e-6)
    assert metrics["loss/sign"] == pytest.approx(1.0666684, abs=1e-6)
    assert metrics["loss/l2"] == pytest.approx(0.015, abs=1e-9)
    assert metrics["accuracy"] == pytest.approx(0.5)
    assert metrics["accuracy_sign"] == pytest.approx(2.0 / 3.0)


def test_cost_model_sign_convention() -> None:
    """C > 0 means unsafe: a harmful-labelled response scored +1 costs less than scored −1.

    The ranking gap C_u − C_s = 1 is held fixed, so only the sign term differs:
    s_u = +1: −log σ(1) = 0.3132617 (C_u = +1) versus −log σ(−1) = 1.3132617 (C_u = −1),
    a difference of exactly 1.0 in the loss. For a safe-labelled response (s = −1) the order
    flips.
    """
    harmful = torch.ones(1, dtype=F64)
    pos, m_pos = cost_model_loss(t(1.0), t(0.0), unsafer_sign=harmful, l2_coeff=0.0)
    neg, m_neg = cost_model_loss(t(-1.0), t(-2.0), unsafer_sign=harmful, l2_coeff=0.0)
    assert pos < neg
    assert m_pos["loss/sign"] == pytest.approx(0.3132617, abs=1e-6)
    assert m_neg["loss/sign"] == pytest.approx(1.3132617, abs=1e-6)
    assert_close(neg - pos, torch.tensor(1.0, dtype=F64), atol=1e-6, rtol=0)

    safe = -torch.ones(1, dtype=F64)
    pos_s, _ = cost_model_loss(t(2.0), t(1.0), safer_sign=safe, l2_coeff=0.0)
    neg_s, _ = cost_model_loss(t(0.0), t(-1.0), safer_sign=safe, l2_coeff=0.0)
    assert neg_s < pos_s


def test_cost_model_unlabelled_and_gradient() -> None:
    """Sign 0 (or None) omits the sign term; gradient by hand.

    unsafer = [2], safer = [0], μ = 0: with no labels the loss is the ranking term 0.1269280
    and accuracy_sign is NaN. With s_u = +1 it adds −log σ(2) = 0.1269280, and
    dL/dC_u = −(1 − σ(2)) − (1 − σ(2)) = −2 · 0.1192029 = −0.2384058, dL/dC_s = +0.1192029.
    """
    loss_none, m_none = cost_model_loss(t(2.0), t(0.0), l2_coeff=0.0)
    loss_zero, _ = cost_model_loss(t(2.0), t(0.0), unsafer_sign=t(0), safer_sign=t(0), l2_coeff=0)
    assert_close(loss_none, torch.tensor(0.1269280, dtype=F64), atol=1e-6, rtol=0)
    assert_close(loss_zero, loss_none)
    assert math.isnan(m_none["accuracy_sign"])

    unsafer = t(2.0).requires_grad_()
    safer = t(0.0).requires_grad_()
    loss, _ = cost_model_loss(unsafer, safer, unsafer_sign=t(1), l2_coeff=0.0)
    assert_close(loss, torch.tensor(0.2538560, dtype=F64), atol=1e-6, rtol=0)
    loss.backward()
    assert_close(unsafer.grad, t(-0.2384058), atol=1e-6, rtol=0)
    assert_close(safer.grad, t(0.1192029), atol=1e-6, rtol=0)


def test_cost_model_weighted_mean() -> None:
    """weight = [1, 3] on the pairs of the hand-value test: loss = (1 · l_1 + 3 · l_2) / 4.

    Per pair (μ = 0.01): l_1 = 0.1269280 + 0.8200752 + 0.02 = 0.9670032,
    l_2 = 2.1269280 + 1.3132617 + 0.01 = 3.4501897; weighted mean = 11.3175723 / 4 = 2.8293931.
    accuracy_sign weights responses by their pair: (1 · 2 + 3 · 0) / (1 · 2 + 3 · 1) = 0.4.
    """
    kwargs = {"unsafer_sign": t(1, 1), "safer_sign": t(-1, 0), "l2_coeff": 0.01}
    loss, metrics = cost_model_loss(t(2.0, -1.0), t(0.0, 1.0), weight=t(1.0, 3.0), **kwargs)
    assert_close(loss, torch.tensor(2.8293931, dtype=F64), atol=1e-6, rtol=0)
    assert metrics["accuracy"] == pytest.approx(0.25)
    assert metrics["accuracy_sign"] == pytest.approx(0.4)


def test_cost_model_unranked_rows_train_sign_terms_only() -> None:
    """Row 1 ordered, row 2 not (two safe responses), μ = 0.

    C_u = [2, 1], C_s = [0, −1], s_u = [+1, −1], s_s = [−1, −1], ranked = [True, False].
    Row 1: ranking −log σ(2) = 0.1269280; signs −log σ(2) + −log σ(0) = 0.1269280 + 0.6931472.
    Row 2: ranking omitted; signs −log σ(−1) + −log σ(1) = 1.3132617 + 0.3132617.
    Loss = (0.1269280 + 0.8200752 + 1.6265234) / 2 = 1.2867633; loss/ranking = 0.0634640.
    accuracy over ordered rows only: 1/1; accuracy_sign: C=2 (+1) ok, C=0 (−1) ok,
    C=1 (−1) wrong, C=−1 (−1) ok → 3/4.
    The unranked row's C_u gets only its sign gradient: d/dC of −log σ(sC) is −s(1 − σ(sC));
    for C = 1, s = −1 that is 1 − σ(−1) = 0.7310586, halved by the mean over B = 2: 0.3655293.
    """
    unsafer = t(2.0, 1.0).requires_grad_()
    loss, metrics = cost_model_loss(
        unsafer,
        t(0.0, -1.0),
        unsafer_sign=t(1.0, -1.0),
        safer_sign=t(-1.0, -1.0),
        ranked=torch.tensor([True, False]),
        l2_coeff=0.0,
    )
    assert_close(loss, torch.tensor(1.2867633, dtype=F64), atol=1e-6, rtol=0)
    assert metrics["loss/ranking"] == pytest.approx(0.0634640, abs=1e-6)
    assert metrics["accuracy"] == pytest.approx(1.0)
    assert metrics["accuracy_sign"] == pytest.approx(0.75)
    loss.backward()
    assert unsafer.grad[1].item() == pytest.approx(0.3655293, abs=1e-6)


def test_cost_model_no_ordered_rows_gives_nan_accuracy() -> None:
    _, metrics = cost_model_loss(
        t(1.0), t(-1.0), unsafer_sign=t(1.0), safer_sign=t(-1.0), ranked=torch.tensor([False])
    )
    assert math.isnan(metrics["accuracy"])
    assert metrics["accuracy_sign"] == pytest.approx(1.0)
