"""Hand-derived checks of DPO, the IPO/BFPO squared loss and SafeDPO (ALGORITHMS.md §3.4-3.11).

Constants (softplus(x) = log(1 + e^x); −log σ(z) = softplus(−z)):
    softplus(−1) = 0.3132617   softplus(1) = 1.3132617   softplus(3) = 3.0485874
    σ(1) = 0.7310586           σ(−1) = 0.2689414         σ(3) = 0.9525741
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from constrained_align.losses import (
    bfpo_targets,
    dpo_loss,
    ipo_squared_loss,
    safe_dpo_loss,
    safe_dpo_relabel,
)

F64 = torch.float64


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=F64)


def scalar(value: float) -> torch.Tensor:
    return torch.tensor(value, dtype=F64)


# ---------------------------------------------------------------------------------------- DPO


def test_dpo_loss_hand_values() -> None:
    """β = 0.5, ℓ_c = [2, 0], ℓ_r = [0, 2] → z = β(ℓ_c − ℓ_r) = [1, −1].

    Loss = (−log σ(1) − log σ(−1)) / 2 = (0.3132617 + 1.3132617) / 2 = 0.8132617.
    rewards/chosen = mean(0.5 · [2, 0]) = 0.5, rewards/rejected = 0.5, margins = 0,
    accuracies = 1/2.
    """
    loss, metrics = dpo_loss(t(2.0, 0.0), t(0.0, 2.0), beta=0.5)
    assert_close(loss, scalar(0.8132617), atol=1e-6, rtol=0)
    assert metrics == pytest.approx(
        {
            "rewards/chosen": 0.5,
            "rewards/rejected": 0.5,
            "rewards/margins": 0.0,
            "rewards/accuracies": 0.5,
        }
    )


def test_dpo_loss_gradient() -> None:
    """dL/dℓ_c,i = −β (1 − σ(z_i)) / B and dL/dℓ_r,i = +β (1 − σ(z_i)) / B.

    β = 0.5, z = [1, −1], B = 2:
      −0.5 · (1 − 0.7310586) / 2 = −0.0672353,   −0.5 · (1 − 0.2689414) / 2 = −0.1827646.
    """
    chosen = t(2.0, 0.0).requires_grad_()
    rejected = t(0.0, 2.0).requires_grad_()
    loss, _ = dpo_loss(chosen, rejected, beta=0.5)
    loss.backward()
    assert_close(chosen.grad, t(-0.0672353, -0.1827646), atol=1e-6, rtol=0)
    assert_close(rejected.grad, t(0.0672353, 0.1827646), atol=1e-6, rtol=0)


def test_dpo_soft_label() -> None:
    """p = 0.25 at z = 1: −[0.25 log σ(1) + 0.75 log σ(−1)] = 0.0783154 + 0.9849463 = 1.0632617.

    p = 1 reproduces the default; p = 0.5 is symmetric in z (both give 0.8132617 at z = ±1).
    """
    loss, _ = dpo_loss(t(2.0), t(0.0), beta=0.5, label=t(0.25))
    assert_close(loss, scalar(1.0632617), atol=1e-6, rtol=0)

    hard, _ = dpo_loss(t(2.0, 0.0), t(0.0, 2.0), beta=0.5)
    ones, _ = dpo_loss(t(2.0, 0.0), t(0.0, 2.0), beta=0.5, label=t(1.0, 1.0))
    assert_close(ones, hard)
    half_pos, _ = dpo_loss(t(2.0), t(0.0), beta=0.5, label=t(0.5))
    half_neg, _ = dpo_loss(t(0.0), t(2.0), beta=0.5, label=t(0.5))
    assert_close(half_pos, scalar(0.8132617), atol=1e-6, rtol=0)
    assert_close(half_neg, half_pos)


def test_dpo_weighted_mean() -> None:
    """weight = [3, 1], z = [1, −1]: (3 · 0.3132617 + 1.3132617) / 4 = 0.5632617.

    Equal to the uniform loss on a batch where pair 1 is repeated three times;
    rewards/accuracies = 3/4.
    """
    loss, metrics = dpo_loss(t(2.0, 0.0), t(0.0, 2.0), beta=0.5, weight=t(3.0, 1.0))
    assert_close(loss, scalar(0.5632617), atol=1e-6, rtol=0)
    assert metrics["rewards/accuracies"] == pytest.approx(0.75)
    repeated, _ = dpo_loss(t(2.0, 2.0, 2.0, 0.0), t(0.0, 0.0, 0.0, 2.0), beta=0.5)
    assert_close(loss, repeated)


# ---------------------------------------------------------------------------- IPO / BFPO


def test_ipo_squared_loss_hand_values() -> None:
    """ℓ_c = [1, 0.5], ℓ_r = [0, 1] → margins [1, −0.5]; mean ℓ_c 0.75, mean ℓ_r 0.5.

    Tensor target [1, −1]: residuals [0, 0.5], loss = (0 + 0.25) / 2 = 0.125.
    Float target 2: residuals [−1, −2.5], loss = (1 + 6.25) / 2 = 3.625.
    Gradient wrt ℓ_c with target 2: 2 · residual / B = [−1, −2.5].
    Weighted [1, 3] with target 2: (1 + 3 · 6.25) / 4 = 4.9375.
    """
    loss, metrics = ipo_squared_loss(t(1.0, 0.5), t(0.0, 1.0), target=t(1.0, -1.0))
    assert_close(loss, scalar(0.125), atol=1e-9, rtol=0)
    assert metrics["rewards/margins"] == pytest.approx(0.25)
    assert metrics["rewards/chosen"] == pytest.approx(0.75)
    assert metrics["rewards/rejected"] == pytest.approx(0.5)
    assert metrics["loss/squared"] == pytest.approx(0.125)

    chosen = t(1.0, 0.5).requires_grad_()
    loss2, _ = ipo_squared_loss(chosen, t(0.0, 1.0), target=2.0)
    assert_close(loss2, scalar(3.625), atol=1e-9, rtol=0)
    loss2.backward()
    assert_close(chosen.grad, t(-1.0, -2.5), atol=1e-9, rtol=0)

    weighted, _ = ipo_squared_loss(t(1.0, 0.5), t(0.0, 1.0), target=2.0, weight=t(1.0, 3.0))
    assert_close(weighted, scalar(4.9375), atol=1e-9, rtol=0)


def test_bfpo_targets_table() -> None:
    """g_I = B1·B3·I(hw) − B3·I(hl) − α with B1 = 3, B3 = 1/2, α = 1/2.

    safe/unsafe: 1.5 − 0 − 0.5 = 1.0; safe/safe: 1.5 − 0.5 − 0.5 = 0.5;
    unsafe/unsafe: −0.5; unsafe/safe: 0 − 0.5 − 0.5 = −1.0.
    With B1 = 2 (B3 = 1) and α = 0: 2·I(hw) − I(hl) = [2, 1, 0, −1].
    """
    chosen_safe = torch.tensor([True, True, False, False])
    rejected_safe = torch.tensor([False, True, False, True])
    targets = bfpo_targets(chosen_safe, rejected_safe)
    assert targets.is_floating_point()
    assert_close(targets, torch.tensor([1.0, 0.5, -0.5, -1.0]), atol=1e-6, rtol=0)
    floats = bfpo_targets(chosen_safe.to(F64), rejected_safe.to(F64), b1=2.0, alpha=0.0)
    assert_close(floats, t(2.0, 1.0, 0.0, -1.0))
    with pytest.raises(ValueError):
        bfpo_targets(chosen_safe, rejected_safe, b1=1.0)


# ---------------------------------------------------------------------------------- SafeDPO

# Rows (h_w, h_l) = (0,0), (0,1), (1,0), (1,1); ℓ_c = 1, ℓ_r = 0 on every row.
H_W = torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=F64)
H_L = torch.tensor([0.0, 1.0, 0.0, 1.0], dtype=F64)


def test_safe_dpo_relabel_table() -> None:
    """(0,0) keep; (0,1) keep; (1,0) keep and swap; (1,1) drop. Bool and float inputs agree."""
    swap, keep = safe_dpo_relabel(H_W, H_L)
    assert swap.dtype == torch.bool and keep.dtype == torch.bool
    assert swap.tolist() == [False, False, True, False]
    assert keep.tolist() == [True, True, True, False]
    swap_b, keep_b = safe_dpo_relabel(H_W.bool(), H_L.bool())
    assert torch.equal(swap_b, swap) and torch.equal(keep_b, keep)


def test_safe_dpo_loss_hand_values() -> None:
    """β = 1, Δ = 2, ℓ_c = 1 and ℓ_r = 0 on all four rows.

    z = β ℓ(ỹ_w) − β ℓ(ỹ_l) − (h̃_l − h̃_w) Δ:
      (0,0): z = 1 − 0 − 0 = 1            → −log σ(1)  = 0.3132617
      (0,1): z = 1 − 0 − 2 = −1           → −log σ(−1) = 1.3132617  (Δ makes it harder)
      (1,0): swap, ỹ_w = y_l (ℓ 0), ỹ_l = y_w (ℓ 1, unsafe): z = 0 − 1 − 2 = −3
                                          → −log σ(−3) = 3.0485874
      (1,1): dropped.
    Loss = (0.3132617 + 1.3132617 + 3.0485874) / 3 = 1.5583703.
    Margins over kept rows (Δ excluded) [1, 1, −1]: mean 1/3, accuracies 2/3;
    β ℓ(ỹ_w) = [1, 1, 0] (mean 2/3) and β ℓ(ỹ_l) = [0, 0, 1] (mean 1/3);
    dropped 1/4, swapped 1/4.
    Gradient: the dropped row gets 0; on the swapped row ℓ_c is the loser, so
    dL/dℓ_c = +β σ(−z) / 3 = σ(3) / 3 = 0.3175247.
    """
    chosen = torch.ones(4, dtype=F64, requires_grad=True)
    rejected = torch.zeros(4, dtype=F64, requires_grad=True)
    loss, metrics = safe_dpo_loss(
        chosen, rejected, chosen_unsafe=H_W, rejected_unsafe=H_L, beta=1.0, delta=2.0
    )
    assert_close(loss, scalar(1.5583703), atol=1e-6, rtol=0)
    assert metrics == pytest.approx(
        {
            "rewards/chosen": 2.0 / 3.0,
            "rewards/rejected": 1.0 / 3.0,
            "rewards/margins": 1.0 / 3.0,
            "rewards/accuracies": 2.0 / 3.0,
            "safe_dpo/dropped_fraction": 0.25,
            "safe_dpo/swapped_fraction": 0.25,
        }
    )
    loss.backward()
    assert chosen.grad[3] == 0.0 and rejected.grad[3] == 0.0
    assert_close(chosen.grad[2], scalar(0.3175247), atol=1e-6, rtol=0)
    assert_close(rejected.grad[2], scalar(-0.3175247), atol=1e-6, rtol=0)


def test_safe_dpo_delta_zero_is_dpo_on_relabelled_pairs() -> None:
    """With Δ = 0, SafeDPO equals DPO on the kept rows with (1,0) swapped by hand."""
    chosen, rejected = t(0.3, -1.2, 2.0, 0.7), t(-0.4, 0.5, 1.1, -2.0)
    loss, _ = safe_dpo_loss(
        chosen, rejected, chosen_unsafe=H_W, rejected_unsafe=H_L, beta=0.7, delta=0.0
    )
    expected, _ = dpo_loss(t(0.3, -1.2, 1.1), t(-0.4, 0.5, 2.0), beta=0.7)
    assert_close(loss, expected)


def test_safe_dpo_soft_label() -> None:
    """label p = [0.25, 0.0, 0.25, 0.5], β = 1, Δ = 2, ℓ_c = 1, ℓ_r = 0.

    (0,0) uses p = 0.25 at z = 1: 0.25 · 0.3132617 + 0.75 · 1.3132617 = 1.0632617;
    (0,1) and (1,0) use label 1 for the safe response whatever p says: 1.3132617, 3.0485874;
    (1,1) dropped. Loss = 5.4251108 / 3 = 1.8083703.
    """
    loss, _ = safe_dpo_loss(
        torch.ones(4, dtype=F64),
        torch.zeros(4, dtype=F64),
        chosen_unsafe=H_W,
        rejected_unsafe=H_L,
        beta=1.0,
        delta=2.0,
        label=t(0.25, 0.0, 0.25, 0.5),
    )
    assert_close(loss, scalar(1.8083703), atol=1e-6, rtol=0)


def test_safe_dpo_weighted_mean() -> None:
    """weight = [1, 2, 3, 4]; the dropped row's weight is discarded.

    Loss = (1 · 0.3132617 + 2 · 1.3132617 + 3 · 3.0485874) / 6 = 12.0855473 / 6 = 2.0142579.
    dropped_fraction = 4/10, swapped_fraction = 3/10 (weighted over all rows).
    """
    loss, metrics = safe_dpo_loss(
        torch.ones(4, dtype=F64),
        torch.zeros(4, dtype=F64),
        chosen_unsafe=H_W,
        rejected_unsafe=H_L,
        beta=1.0,
        delta=2.0,
        weight=t(1.0, 2.0, 3.0, 4.0),
    )
    assert_close(loss, scalar(2.0142579), atol=1e-6, rtol=0)
    assert metrics["safe_dpo/dropped_fraction"] == pytest.approx(0.4)
    assert metrics["safe_dpo/swapped_fraction"] == pytest.approx(0.3)


def test_safe_dpo_all_dropped_is_zero_with_grad() -> None:
    """Every row (1,1): loss is exactly 0, finite, attached to the graph, zero gradient."""
    chosen = t(1.0, -3.0).requires_grad_()
    rejected = t(0.5, 2.0).requires_grad_()
    ones = torch.ones(2, dtype=F64)
    loss, metrics = safe_dpo_loss(
        chosen, rejected, chosen_unsafe=ones, rejected_unsafe=ones, beta=0.1, delta=10.0
    )
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(chosen.grad, torch.zeros(2, dtype=F64))
    assert metrics["safe_dpo/dropped_fraction"] == 1.0
    assert math.isnan(metrics["rewards/margins"])
