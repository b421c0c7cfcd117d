"""Exact quantities of the closed-form testbed against ALGORITHMS.md §5.3 and §5.5."""

import numpy as np
import pytest

from constrained_align.testbed import (
    Bandit,
    InfeasibleError,
    both_placement_optimum,
    generated,
    instance_a,
    population_pairs,
)
from constrained_align.testbed.targets import bfpo_optimum


def test_instance_a_constrained_optimum():
    """π* of Instance A (β = 0.5, d = −0.3): λ* = 1.067480 and the §5.3 table row."""
    bandit = instance_a()
    opt = bandit.optimum()
    assert opt.lam == pytest.approx(1.067480, abs=1e-6)
    np.testing.assert_allclose(opt.policy[0], [0.156520, 0.708021, 0.102509, 0.032950], atol=1e-6)
    assert opt.expected_reward == pytest.approx(0.391546, abs=1e-6)
    assert opt.expected_cost == pytest.approx(-0.3, abs=1e-9)
    assert opt.kl == pytest.approx(0.620256, abs=1e-6)
    assert bandit.objective(opt.policy) == pytest.approx(0.081418, abs=1e-6)


def test_instance_a_duality_and_unconstrained_policy():
    """Strong duality D(λ*) = J(π*) = 0.081418; D(0) = J(π_0) = 0.640456; C(0) = 0.737996."""
    bandit = instance_a()
    lam = bandit.lambda_star()
    assert bandit.dual(lam) == pytest.approx(bandit.objective(bandit.gibbs(lam)), abs=1e-12)
    assert bandit.dual(lam) == pytest.approx(0.081418, abs=1e-6)
    pi0 = bandit.optimum(0.0)
    np.testing.assert_allclose(pi0.policy[0], [0.821024, 0.151019, 0.007519, 0.020438], atol=1e-6)
    assert pi0.expected_cost == pytest.approx(0.737996, abs=1e-6)
    assert bandit.dual(0.0) == pytest.approx(0.640456, abs=1e-6)


def test_slack_constraint_gives_zero_multiplier_and_infeasible_raises():
    assert instance_a(cost_limit=0.8).lambda_star() == 0.0
    with pytest.raises(InfeasibleError, match="infeasible"):
        instance_a(cost_limit=-1.0).lambda_star()


def test_hard_optimum():
    hard = instance_a().hard_optimum()
    np.testing.assert_allclose(hard.policy[0], [0.0, 0.843795, 0.042010, 0.114195], atol=1e-6)
    assert hard.expected_reward == pytest.approx(0.322790, abs=1e-6)


@pytest.mark.parametrize(
    ("eps", "lam"), [(0.3, 1.185), (0.1, 1.860), (0.01, 3.059), (0.001, 4.215)]
)
def test_binary_cost_variant(eps, lam):
    """P(unsafe) ≤ ε: λ*(ε) from the §5.3 table; π*(unsafe) = ε."""
    bandit = instance_a(binary=True, cost_limit=eps)
    opt = bandit.optimum()
    assert opt.lam == pytest.approx(lam, abs=1e-3)
    assert opt.policy[0, 0] == pytest.approx(eps, abs=1e-9)


def test_generator_reference_values():
    """§5.5: seed 0 gives 12 harmful prompts, λ* = 0.56743 (β = 0.1) and 0.502667 (β = 0.5)."""
    bandit = generated(0, beta=0.1, cost_limit=-0.5)
    assert bandit.shape == (32, 16)
    assert int((np.random.default_rng(0).random(32) < 0.5).sum()) == 12  # first draw: flags
    assert bandit.lambda_star() == pytest.approx(0.56743, abs=1e-5)
    assert bandit.expected(bandit.ref_probs, bandit.cost) == pytest.approx(-0.59, abs=5e-3)
    assert bandit.optimum(0.0).expected_cost == pytest.approx(-0.23, abs=5e-3)
    assert bandit.min_cost() == pytest.approx(-1.46, abs=5e-3)
    assert generated(0, beta=0.5, cost_limit=-0.5).lambda_star() == pytest.approx(
        0.502667, abs=1e-6
    )


def test_both_placement_fixed_point_of_instance_a():
    """Safe RLHF's KL placement converges to the β(1+λ) problem: λ̄ = 1.724704 (§5.3)."""
    lam, policy = both_placement_optimum(instance_a())
    assert lam == pytest.approx(1.724704, abs=1e-6)
    np.testing.assert_allclose(policy[0], [0.186843, 0.432280, 0.270703, 0.110174], atol=1e-6)


def test_bfpo_optimum_on_uniform_pairs():
    """BFPO's least-squares optimum on uniform unordered pairs, τ = β: (0.081, 0.394, 0.241,
    0.284), E r = −0.104, E c = −0.357 (§5.4)."""
    bandit = instance_a()
    pairs = population_pairs(bandit, mu=np.full((1, 4), 0.25))
    policy = bfpo_optimum(bandit, pairs, tau=bandit.beta)
    np.testing.assert_allclose(policy[0], [0.081, 0.394, 0.241, 0.284], atol=1e-3)
    assert bandit.expected(policy, bandit.reward) == pytest.approx(-0.104, abs=1e-3)
    assert bandit.expected(policy, bandit.cost) == pytest.approx(-0.357, abs=1e-3)


def test_bandit_accepts_torch_and_checks_shapes():
    import torch

    bandit = Bandit(
        torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2, 3), beta=1.0, cost_limit=1.0
    )
    assert bandit.shape == (2, 3)
    with pytest.raises(ValueError, match="same"):
        Bandit(np.zeros((2, 3)), np.zeros((2, 2)), np.ones((2, 3)), beta=1.0, cost_limit=0.0)
