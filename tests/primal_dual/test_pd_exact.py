"""One-shot dual solves on ALGORITHMS.md §5.3 Instance A (constrained_align.primal_dual.exact)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from constrained_align.primal_dual import (
    DualUnboundedError,
    ImportanceEstimate,
    solve_dual,
    solve_dual_multi,
)

# Instance A, all four responses enumerated: helpful-unsafe, helpful-safe, refusal, off-topic.
R = np.array([[1.0, 0.5, -1.0, -0.5]])  # (K=1, M=4)
C = np.array([[1.0, -0.5, -1.0, 0.0]])
PI_REF = np.array([[0.4, 0.2, 0.2, 0.2]])
BETA, D = 0.5, -0.3
LAMBDA_STAR = 1.067480  # §5.3 table
C_ZERO = 0.737996  # E_{π_0}[c], §5.3 table


def test_instance_a_lambda_star() -> None:
    """λ* solves C(λ) = d with π_λ ∝ π_ref·exp((r − λc)/β); §5.3 gives λ* = 1.067480.

    Strong duality (§5.3): D(λ*) = β log Z_{λ*} + λ* d = J* = 0.081418, and D(0) = 0.640456.
    """
    lam = solve_dual(R, C, beta=BETA, cost_limit=D, weights=PI_REF)
    assert lam == pytest.approx(LAMBDA_STAR, abs=1e-6)
    est = ImportanceEstimate(R, C, beta=BETA, weights=PI_REF)
    assert est(lam) == pytest.approx(D, abs=1e-9)
    assert est.log_partition(lam) + lam * D == pytest.approx(0.081418, abs=1e-6)
    assert est.log_partition(0.0) == pytest.approx(0.640456, abs=1e-6)


def test_instance_a_torch_input() -> None:
    lam = solve_dual(
        torch.tensor(R), torch.tensor(C), beta=BETA, cost_limit=D, weights=torch.tensor(PI_REF)
    )
    assert lam == pytest.approx(LAMBDA_STAR, abs=1e-6)


@pytest.mark.parametrize("limit", [0.738, 1.0, 5.0])
def test_instance_a_slack_constraint_gives_zero(limit: float) -> None:
    """C(0) = 0.737996 ≤ d ⇒ the unconstrained optimum is feasible ⇒ λ* = 0."""
    est = ImportanceEstimate(R, C, beta=BETA, weights=PI_REF)
    assert est(0.0) == pytest.approx(C_ZERO, abs=1e-6)
    assert solve_dual(R, C, beta=BETA, cost_limit=limit, weights=PI_REF) == 0.0


def test_just_below_c0_gives_small_positive_lambda() -> None:
    assert 0.0 < solve_dual(R, C, beta=BETA, cost_limit=0.7, weights=PI_REF) < 0.1


@pytest.mark.parametrize("limit", [-1.0, -1.5])
def test_instance_a_unbounded_below_min_cost(limit: float) -> None:
    """min_y c = −1 (refusal): d ≤ −1 cannot be met by any mixture, so the dual is unbounded."""
    with pytest.raises(DualUnboundedError, match=r"-1") as info:
        solve_dual(R, C, beta=BETA, cost_limit=limit, weights=PI_REF)
    assert f"{limit:.6g}" in str(info.value)
    assert "larger cost_limit" in str(info.value)


def test_solve_dual_max_value() -> None:
    """λ* = 1.0675 > max_value 1: refused, not clipped; max_value 2 is fine."""
    with pytest.raises(DualUnboundedError, match="max_value"):
        solve_dual(R, C, beta=BETA, cost_limit=D, weights=PI_REF, max_value=1.0)
    lam = solve_dual(R, C, beta=BETA, cost_limit=D, weights=PI_REF, max_value=2.0)
    assert lam == pytest.approx(LAMBDA_STAR, abs=1e-6)


def test_prompt_weights_select_a_prompt() -> None:
    """Two prompts, ρ = (1, 0): the second prompt (which alone is infeasible) is ignored."""
    reward = np.vstack([R, np.zeros((1, 4))])
    cost = np.vstack([C, np.full((1, 4), 9.0)])
    weights = np.vstack([PI_REF, np.ones((1, 4))])
    lam = solve_dual(
        reward, cost, beta=BETA, cost_limit=D, weights=weights, prompt_weights=np.array([1.0, 0.0])
    )
    assert lam == pytest.approx(LAMBDA_STAR, abs=1e-6)


def test_two_samples_per_prompt_analytic_root() -> None:
    """r = (1, 0), c = (1, −1), β = 0.5, no base weights, d = −0.5.

    C(λ) = tanh(1 − 2λ) (see the estimator test) = −0.5 ⇒ λ* = (1 + atanh 0.5)/2 = 0.77465307.
    """
    lam = solve_dual(np.array([[1.0, 0.0]]), np.array([[1.0, -1.0]]), beta=0.5, cost_limit=-0.5)
    assert lam == pytest.approx((1.0 + math.atanh(0.5)) / 2.0, abs=1e-9)


@pytest.mark.parametrize("limit", [D, 0.0, 0.5, 0.7, 1.0])
def test_multi_with_one_constraint_matches_solve_dual(limit: float) -> None:
    single = solve_dual(R, C, beta=BETA, cost_limit=limit, weights=PI_REF)
    multi = solve_dual_multi(R, C[..., None], beta=BETA, cost_limits=[limit], weights=PI_REF)
    assert multi.shape == (1,)
    assert multi[0] == pytest.approx(single, abs=1e-6)


def test_multi_slack_second_constraint_and_split() -> None:
    """Duplicate the cost. With d2 = 0.2 > d1 the second constraint is slack: λ = (λ*, 0).

    With d1 = d2 only λ1 + λ2 enters π_λ, so the minimisers are the segment λ1 + λ2 = λ*.
    """
    costs = np.stack([C, C], axis=-1)  # (1, 4, 2)
    lam = solve_dual_multi(R, costs, beta=BETA, cost_limits=[D, 0.2], weights=PI_REF)
    assert lam == pytest.approx([LAMBDA_STAR, 0.0], abs=1e-6)
    lam = solve_dual_multi(R, costs, beta=BETA, cost_limits=np.array([D, D]), weights=PI_REF)
    assert lam.sum() == pytest.approx(LAMBDA_STAR, abs=1e-6)


def test_multi_random_against_single() -> None:
    """Independent costs where only constraint 0 binds: λ0 equals the 1-D solve, λ1 = 0."""
    gen = np.random.default_rng(1)
    reward = gen.normal(size=(20, 8))
    costs = gen.normal(size=(20, 8, 2))
    lam = solve_dual_multi(reward, costs, beta=0.3, cost_limits=[-0.2, 5.0])
    single = solve_dual(reward, costs[..., 0], beta=0.3, cost_limit=-0.2)
    assert lam == pytest.approx([single, 0.0], abs=1e-6)


def test_multi_unbounded() -> None:
    """Per-constraint Slater failure, and joint infeasibility (E c ≤ −0.3 and E[−c] ≤ −0.3)."""
    with pytest.raises(DualUnboundedError, match="k=1"):
        solve_dual_multi(R, np.stack([C, C], -1), beta=BETA, cost_limits=[D, -1.0], weights=PI_REF)
    with pytest.raises(DualUnboundedError, match="jointly"):
        solve_dual_multi(R, np.stack([C, -C], -1), beta=BETA, cost_limits=[D, D], weights=PI_REF)


def test_multi_max_value() -> None:
    with pytest.raises(DualUnboundedError, match="max_value"):
        solve_dual_multi(R, C[..., None], beta=BETA, cost_limits=[D], weights=PI_REF, max_value=1.0)
