"""The exact population fixed point each registry key should reach (ALGORITHMS.md §5.4).

Most keys target π* = π_{λ*}. The others, derived here rather than hard-coded:

- ``dpo`` → π_0 (helpfulness view; the harmless view → π_ref·e^{−c/β}).
- ``ppo_shaping`` → π_ν for its fixed ν.
- ``ppo_lag`` / ``grpo_lag`` with ``kl_placement: both`` → the Gibbs policy with KL weight
  β(1+λ̄), π ∝ π_ref·exp((r − λ̄c)/(β(1+λ̄))), at the λ̄ where its cost meets d (§5.3).
- ``safe_dpo`` → π_hard.
- ``pecan`` with the reference code's raw label scale → π_ref·e^{(r − λ*c)/β²}.
- ``sacpo`` with a fixed λ → π_λ (π* only when λ = λ*).
- ``bfpo`` → the minimiser of its expected squared loss: per prompt, the weighted
  least-squares problem min_ℓ Σ_pairs w·(ℓ(y1) − ℓ(y0) − t)² with expected target
  t = p·g(y1,y0)/τ − (1−p)·g(y0,y1)/τ (p = P(y1 more helpful)), solved through the pair
  graph's Laplacian; then π ∝ π_ref·e^ℓ.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import brentq
from scipy.special import logsumexp

from constrained_align.testbed.bandit import Bandit
from constrained_align.types import PairBatch


@dataclass
class Target:
    """The policy a run should converge to, and the multiplier that goes with it."""

    name: str
    policy: np.ndarray
    lam: float | None


def _softmax(logits: np.ndarray) -> np.ndarray:
    return np.exp(logits - logsumexp(logits, axis=-1, keepdims=True))


def both_placement_optimum(bandit: Bandit) -> tuple[float, np.ndarray]:
    """(λ̄, π) of Safe RLHF's KL placement: KL weight β(1+λ) on the Lagrangian r − λc."""

    def policy(lam: float) -> np.ndarray:
        scale = bandit.beta * (1.0 + lam)
        return _softmax(np.log(bandit.ref_probs) + (bandit.reward - lam * bandit.cost) / scale)

    def excess(lam: float) -> float:
        return bandit.expected(policy(lam), bandit.cost) - bandit.cost_limit

    if excess(0.0) <= 0:
        return 0.0, policy(0.0)
    hi = 1.0
    while excess(hi) > 0:
        hi *= 2.0
        if hi > 1e12:
            raise ValueError("the β(1+λ) problem does not meet the cost limit for any λ")
    lam = float(brentq(excess, 0.0, hi, xtol=1e-14, rtol=1e-14))
    return lam, policy(lam)


def bfpo_optimum(
    bandit: Bandit, pairs: PairBatch, *, tau: float, b1: float = 3.0, alpha: float = 0.5
) -> np.ndarray:
    """π minimising BFPO's expected squared loss on ``pairs`` (population or sampled)."""
    b3 = 1.0 / (b1 - 1.0)
    k, n = bandit.shape
    prompt = pairs.response_0.prompt.numpy()
    y0, y1 = pairs.response_0.response.numpy(), pairs.response_1.response.numpy()
    s0, s1 = pairs.safe_0.numpy(), pairs.safe_1.numpy()
    p, w = pairs.better_id.numpy(), pairs.weight.numpy()
    g10 = b1 * b3 * s1 - b3 * s0 - alpha  # response_1 more helpful
    g01 = b1 * b3 * s0 - b3 * s1 - alpha  # response_0 more helpful
    target = (p * g10 - (1.0 - p) * g01) / tau
    ell = np.zeros((k, n))
    for x in range(k):
        rows = prompt == x
        lap = np.zeros((n, n))
        rhs = np.zeros(n)
        for a, b, wt, t in zip(y0[rows], y1[rows], w[rows], target[rows], strict=True):
            lap[a, a] += wt
            lap[b, b] += wt
            lap[a, b] -= wt
            lap[b, a] -= wt
            rhs[b] += wt * t
            rhs[a] -= wt * t
        ell[x] = np.linalg.lstsq(lap, rhs, rcond=None)[0]
    return _softmax(np.log(bandit.ref_probs) + ell)


def target_for(key: str, config: Any, bandit: Bandit, pairs: PairBatch) -> Target:
    """The exact fixed point of ``key`` under ``config`` on ``bandit``."""
    lam_star = bandit.lambda_star()
    if key == "dpo":
        if config.preference == "harmless":
            return Target(
                "π_ref·e^{−c/β}",
                _softmax(np.log(bandit.ref_probs) - bandit.cost / bandit.beta),
                None,
            )
        return Target("π_0", bandit.gibbs(0.0), None)
    if key == "ppo_shaping":
        nu = config.dual.lambda_init
        return Target(f"π_ν (ν={nu:g})", bandit.gibbs(nu), nu)
    if key in ("ppo_lag", "grpo_lag") and config.kl_placement == "both":
        lam, policy = both_placement_optimum(bandit)
        return Target("β(1+λ) point", policy, lam)
    if key == "safe_dpo":
        return Target("π_hard", bandit.hard_optimum().policy, None)
    if key == "bfpo":
        policy = bfpo_optimum(bandit, pairs, tau=config.beta, b1=config.b1, alpha=config.alpha)
        return Target("BFPO optimum", policy, None)
    if key == "pecan" and config.label_scale == "raw":
        policy = bandit.gibbs(lam_star, beta=bandit.beta**2)
        return Target("β² point", policy, lam_star)
    if key == "sacpo" and config.lambda_source == "fixed":
        lam = config.dual.lambda_init
        return Target(f"π_λ (λ={lam:g})", bandit.gibbs(lam), lam)
    return Target("π*", bandit.gibbs(lam_star), lam_star)
