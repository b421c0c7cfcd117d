"""Hand-computed checks of the constraint estimators (constrained_align.primal_dual.estimators)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from constrained_align.primal_dual import EMA, BatchMean, ImportanceEstimate, WindowMean


def test_window_mean_eviction() -> None:
    """size 3: [1, 2] → 1.5; add [3, 4] evicts 1 → mean(2, 3, 4) = 3."""
    window = WindowMean(size=3)
    window.add([1.0, 2.0])
    assert window.value() == 1.5
    window.add(torch.tensor([3.0, 4.0]))
    assert len(window) == 3
    assert window.value() == 3.0


def test_window_weighted_mean_keeps_each_sample_weight() -> None:
    """size 3, weights travel with their samples.

    add [1, 3] w [1, 3]  → (1·1 + 3·3)/4 = 2.5
    add [5] w [0]        → window (1, 3, 5), w (1, 3, 0) → 10/4 = 2.5
    add [7] (w 1)        → evicts 1: (3, 5, 7), w (3, 0, 1) → (9 + 7)/4 = 4
    """
    window = WindowMean(size=3)
    window.add([1.0, 3.0], weights=[1.0, 3.0])
    assert window.value() == 2.5
    window.add(np.array([5.0]), weights=np.array([0.0]))
    assert window.value() == 2.5
    window.add([7.0])
    assert window.value() == 4.0


def test_window_errors() -> None:
    window = WindowMean(size=4)
    with pytest.raises(ValueError, match="empty"):
        window.value()
    with pytest.raises(ValueError, match="finite"):
        window.add([1.0, math.nan])
    with pytest.raises(ValueError, match="weights"):
        window.add([1.0, 2.0], weights=[1.0])
    with pytest.raises(ValueError, match=">= 0"):
        window.add([1.0], weights=[-1.0])


def test_window_state_round_trip() -> None:
    window = WindowMean(size=3)
    window.add([0.1, 0.2, 0.3, 0.4], weights=[1.0, 2.0, 3.0, 4.0])
    other = WindowMean(size=3)
    other.load_state_dict(json.loads(json.dumps(window.state_dict())))
    assert other.value() == window.value()
    window.add([0.9])
    other.add([0.9])
    assert other.value() == window.value()
    assert len(other) == 3


def test_batch_mean_uses_last_batch_only() -> None:
    """[1, 2, 3] → 2; then [10, 20] w [3, 1] → (30 + 20)/4 = 12.5."""
    est = BatchMean()
    with pytest.raises(ValueError, match="empty"):
        est.value()
    est.add([1.0, 2.0, 3.0])
    assert est.value() == 2.0
    est.add([10.0, 20.0], weights=[3.0, 1.0])
    assert est.value() == 12.5
    other = BatchMean()
    other.load_state_dict(json.loads(json.dumps(est.state_dict())))
    assert other.value() == 12.5


def test_ema() -> None:
    """momentum 0.5: [2, 4] sets 3; [7] → 0.5·3 + 0.5·7 = 5; [1] → 0.5·5 + 0.5·1 = 3."""
    est = EMA(momentum=0.5)
    with pytest.raises(ValueError, match="empty"):
        est.value()
    est.add([2.0, 4.0])
    assert est.value() == 3.0
    est.add([7.0])
    assert est.value() == 5.0
    other = EMA(momentum=0.5)
    other.load_state_dict(json.loads(json.dumps(est.state_dict())))
    est.add([1.0])
    other.add([1.0])
    assert est.value() == other.value() == 3.0
    assert len(other) == 3


def test_importance_two_samples_closed_form() -> None:
    """r = (1, 0), c = (1, −1), β = 0.5, uniform w̃ = ½.

    C(λ) = 2σ((1 − 2λ)/β) − 1 = tanh(1 − 2λ): C(0) = tanh 1, C(0.25) = tanh 0.5.
    log_partition(λ) = β log(½(e^{2(1−λ)} + e^{2λ})); at 0: 0.5·log((e² + 1)/2).
    """
    est = ImportanceEstimate(np.array([1.0, 0.0]), torch.tensor([1.0, -1.0]), beta=0.5)
    assert est(0.0) == pytest.approx(math.tanh(1.0), abs=1e-12)
    assert est(0.25) == pytest.approx(math.tanh(0.5), abs=1e-12)
    assert est.log_partition(0.0) == pytest.approx(0.5 * math.log((math.e**2 + 1) / 2), abs=1e-12)
    assert est.min_cost() == -1.0


def test_importance_derivative_of_log_partition_is_minus_cost() -> None:
    """d/dλ [β Σ ρ logsumexp((r − λc)/β + log w̃)] = −C(λ) (§1.3), by central differences."""
    gen = np.random.default_rng(0)
    est = ImportanceEstimate(
        gen.normal(size=(3, 5)),
        gen.normal(size=(3, 5)),
        beta=0.3,
        weights=gen.random((3, 5)),
        prompt_weights=np.array([1.0, 2.0, 3.0]),
    )
    h = 1e-5
    for lam in (0.0, 0.4, 2.0):
        slope = (est.log_partition(lam + h) - est.log_partition(lam - h)) / (2 * h)
        assert slope == pytest.approx(-est(lam), abs=1e-8)


def test_importance_weights_equal_repeated_samples() -> None:
    """Base weights (0.4, 0.2, 0.2, 0.2) equal uniform weights on 5 samples with the first twice."""
    r, c = np.array([1.0, 0.5, -1.0, -0.5]), np.array([1.0, -0.5, -1.0, 0.0])
    weighted = ImportanceEstimate(r, c, beta=0.5, weights=np.array([0.4, 0.2, 0.2, 0.2]))
    repeated = ImportanceEstimate(np.r_[r[:1], r], np.r_[c[:1], c], beta=0.5)
    for lam in (0.0, 0.5, 1.0674795893883382, 3.0):
        assert weighted(lam) == pytest.approx(repeated(lam), abs=1e-14)
        assert weighted.log_partition(lam) == pytest.approx(repeated.log_partition(lam), abs=1e-14)


def test_importance_prompt_weights_and_min_cost() -> None:
    """Two prompts, ρ ∝ (3, 1) → (0.75, 0.25).

    Prompt 0: c = (−2, 1) with w = (0, 1): the −2 sample has no weight, so only c = 1 counts,
    C_0(λ) = 1 and min_0 = 1. Prompt 1: c = (−1, 3), uniform, r = 0: C_1(0) = 1, min_1 = −1.
    C(0) = 0.75·1 + 0.25·1 = 1; min_cost = 0.75·1 + 0.25·(−1) = 0.5.
    """
    est = ImportanceEstimate(
        np.zeros((2, 2)),
        np.array([[-2.0, 1.0], [-1.0, 3.0]]),
        beta=1.0,
        weights=np.array([[0.0, 1.0], [1.0, 1.0]]),
        prompt_weights=torch.tensor([3.0, 1.0]),
    )
    assert est(0.0) == pytest.approx(1.0, abs=1e-15)
    assert est.min_cost() == pytest.approx(0.5, abs=1e-15)


def test_importance_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="must both be"):
        ImportanceEstimate(np.zeros((2, 3)), np.zeros((2, 2)), beta=1.0)
    with pytest.raises(ValueError, match="beta"):
        ImportanceEstimate(np.zeros((1, 2)), np.zeros((1, 2)), beta=0.0)
    with pytest.raises(ValueError, match="positive weight"):
        ImportanceEstimate(np.zeros((1, 2)), np.zeros((1, 2)), beta=1.0, weights=np.zeros((1, 2)))
