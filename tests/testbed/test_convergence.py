"""Every registry key reaches its exact population fixed point on the closed-form testbed.

Acceptance (issue 2): mean-over-prompts TV(π, target) ≤ 0.01, and for keys targeting π* with
λ* > 0, |E[c] − d| ≤ 0.01 and λ within 2% of λ*. SafeDPO reaches π_hard only asymptotically:
its unsafe mass must vanish and its TV shrink. Sampled mode: the same targets within TV ≤ 0.05.
"""

import numpy as np
import pytest
import torch

from constrained_align.testbed import Bandit, generated, instance_a, run
from constrained_align.testbed.report import Row

PI_STAR_KEYS = ["ppo_lag", "grpo_lag", "c_dpo", "mocan", "pecan", "caid", "sacpo"]
ALL_KEYS = [*PI_STAR_KEYS, "dpo", "ppo_shaping", "safe_dpo", "bfpo"]

BANDITS = {
    "A": instance_a(),
    "gen-b0.1": generated(0, beta=0.1, cost_limit=-0.5),
    "gen-b0.5-s1": generated(1, beta=0.5, cost_limit=-0.5),
}


def check_population(key: str, result) -> None:
    target = result.target
    if key == "safe_dpo":
        assert result.unsafe_mass < 1e-3
        assert result.tv_to_target < 0.05
        return
    assert result.tv_to_target <= 0.01, (key, target.name, result.tv_to_target)
    if key in PI_STAR_KEYS:
        assert target.name == "π*"
        assert result.lambda_star > 0
        assert abs(result.expected_cost - result.bandit.cost_limit) <= 0.01
        assert result.lam == pytest.approx(result.lambda_star, rel=0.02)


@pytest.mark.parametrize("instance", sorted(BANDITS))
@pytest.mark.parametrize("key", ALL_KEYS)
def test_population_convergence(key, instance):
    result = run(key, BANDITS[instance])
    check_population(key, result)
    assert Row(key, result).met


def test_targets_are_the_documented_ones():
    bandit = BANDITS["A"]
    assert run("dpo", bandit, epochs=1).target.name == "π_0"
    np.testing.assert_allclose(run("dpo", bandit, epochs=1).target.policy, bandit.gibbs(0.0))
    shaping = run("ppo_shaping", bandit, steps=1, lambda_init=0.7)
    np.testing.assert_allclose(shaping.target.policy, bandit.gibbs(0.7))


@pytest.mark.parametrize("key", ["dpo", "mocan", "sacpo", "pecan"])
def test_exactness_on_instance_a(key):
    """§5.6: the offline keys land on their target to 1e-6 on Instance A."""
    result = run(key, BANDITS["A"])
    assert result.tv_to_target < 1e-6


@pytest.mark.parametrize("key", ["ppo_lag", "grpo_lag"])
def test_kl_placement_both_reaches_its_own_fixed_point(key):
    """Safe RLHF's placement lands on the β(1+λ) point (λ̄ = 1.724704), not on π*."""
    result = run(key, BANDITS["A"], kl_placement="both", steps=3000)
    assert result.target.name == "β(1+λ) point"
    assert result.tv_to_target <= 0.01
    assert result.lam == pytest.approx(1.724704, rel=0.02)
    assert result.tv_to_optimum > 0.2


def test_pecan_raw_labels_target_beta_squared():
    """Labels σ(Δℓ_r + λΔℓ_g) make DPO(β) target π_ref·e^{(r − λ*c)/β²} (§5.3)."""
    result = run("pecan", BANDITS["A"], label_scale="raw")
    np.testing.assert_allclose(
        result.policy[0], [0.023326, 0.954596, 0.020010, 0.002067], atol=1e-5
    )


def test_slack_constraint_gives_zero_lambda():
    bandit = instance_a(cost_limit=0.8)  # C(0) = 0.738 ≤ d
    assert run("mocan", bandit).lam == 0.0
    c_dpo = run("c_dpo", bandit)
    assert c_dpo.lam == 0.0 and c_dpo.tv_to_target < 0.01


@pytest.mark.parametrize("key", ["mocan", "c_dpo", "ppo_lag"])
def test_flipped_cost_sign_fails_the_violation_check(key):
    """Training on −c (a sign bug) must violate the true constraint."""
    true = BANDITS["A"]
    flipped = Bandit(
        true.reward, -true.cost, true.ref_probs, beta=true.beta, cost_limit=-true.cost_limit
    )
    result = run(key, flipped)
    assert true.expected(result.policy, true.cost) - true.cost_limit > 0.01


@pytest.mark.parametrize("key", ALL_KEYS)
def test_sampled_mode_on_instance_a(key):
    """Finite seeded samples: pairs, reference samples and rollouts; TV ≤ 0.05."""
    result = run(
        key,
        BANDITS["A"],
        seed=0,
        mode="sampled",
        pairs_per_prompt=4000,
        reference_samples=2000,
        samples_per_prompt=2000 if key in ("c_dpo", "caid") else 64,
    )
    assert result.tv_to_target <= 0.05, (key, result.tv_to_target)
    if key == "safe_dpo":
        assert result.unsafe_mass < 0.01


def test_unbounded_one_shot_dual_is_reported():
    """Every reference sample violating the limit: a clear error, not λ_max."""
    from constrained_align.algorithms.duals import exact_dual_step
    from constrained_align.config import DualConfig
    from constrained_align.primal_dual import (
        DualUnboundedError,
        ImportanceEstimate,
        make_primal_dual,
    )

    estimate = ImportanceEstimate(torch.zeros(2, 3), torch.ones(2, 3), beta=0.5)
    pd = make_primal_dual(DualConfig(multiplier="exact", cost_window=0), beta=0.5)
    with pytest.raises(DualUnboundedError, match=r"unbounded.*raise cost_limit"):
        exact_dual_step(pd, estimate, cost_limit=0.5)
