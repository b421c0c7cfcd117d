"""The closed-form contextual bandit of ALGORITHMS.md §5: exact λ*, π* and Gibbs policies.

K prompts (weights ρ), N responses each, known reward r and cost c tables, a full-support
π_ref, KL weight β and cost limit d. For any λ ≥ 0 the maximiser of the Lagrangian is the Gibbs
policy π_λ = softmax(log π_ref + (r − λc)/β); C(λ) = E_ρ E_{π_λ}[c] is non-increasing, so λ* is
0 when C(0) ≤ d and otherwise the root of C(λ) = d (bracketed by doubling, then Brent).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import brentq
from scipy.special import logsumexp


class InfeasibleError(ValueError):
    """The cost limit is at or below the smallest achievable expected cost."""


def _array(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


@dataclass
class Optimum:
    """A policy of the bandit with the quantities ALGORITHMS.md §5.2 reports.

    Attributes:
        lam: the multiplier λ the policy is the Gibbs policy of.
        policy: ``(K, N)`` π.
        expected_reward: E_ρ E_π[r].
        expected_cost: E_ρ E_π[c].
        kl: E_ρ KL(π ‖ π_ref).
    """

    lam: float
    policy: np.ndarray
    expected_reward: float
    expected_cost: float
    kl: float


class Bandit:
    """A closed-form constrained bandit.

    Args:
        reward: ``(K, N)`` r[x, y] (numpy or torch).
        cost: ``(K, N)`` c[x, y]; c > 0 is unsafe.
        ref_probs: ``(K, N)`` π_ref, full support (rows are normalised).
        beta: KL weight β > 0.
        cost_limit: d in E[c] ≤ d.
        prompt_weights: ``(K,)`` ρ; uniform when None.
    """

    def __init__(
        self,
        reward: Any,
        cost: Any,
        ref_probs: Any,
        *,
        beta: float,
        cost_limit: float,
        prompt_weights: Any = None,
    ) -> None:
        self.reward = np.atleast_2d(_array(reward))
        self.cost = np.atleast_2d(_array(cost))
        ref = np.atleast_2d(_array(ref_probs))
        if not (self.reward.shape == self.cost.shape == ref.shape):
            raise ValueError(
                f"reward {self.reward.shape}, cost {self.cost.shape} and ref_probs {ref.shape} "
                "must have the same (K, N) shape"
            )
        if (ref <= 0).any():
            raise ValueError("ref_probs must be positive everywhere (full support)")
        if beta <= 0:
            raise ValueError(f"beta must be positive, got {beta}")
        self.ref_probs = ref / ref.sum(-1, keepdims=True)
        self.beta = float(beta)
        self.cost_limit = float(cost_limit)
        k = self.reward.shape[0]
        rho = np.ones(k) if prompt_weights is None else _array(prompt_weights).reshape(k)
        self.prompt_weights = rho / rho.sum()

    @property
    def shape(self) -> tuple[int, int]:
        """(K, N)."""
        return self.reward.shape  # type: ignore[return-value]

    # ---- policies ---------------------------------------------------------------------------

    def gibbs(self, lam: float, *, beta: float | None = None) -> np.ndarray:
        """π_λ = softmax(log π_ref + (r − λc)/β), ``(K, N)``."""
        beta = self.beta if beta is None else beta
        logits = np.log(self.ref_probs) + (self.reward - lam * self.cost) / beta
        return np.exp(logits - logsumexp(logits, axis=-1, keepdims=True))

    def expected(self, policy: np.ndarray, table: np.ndarray) -> float:
        """E_ρ E_π[table]."""
        return float(self.prompt_weights @ (policy * table).sum(-1))

    def kl(self, policy: np.ndarray) -> float:
        """E_ρ KL(π ‖ π_ref)."""
        p = np.clip(policy, 1e-300, None)
        return float(self.prompt_weights @ (policy * (np.log(p) - np.log(self.ref_probs))).sum(-1))

    def objective(self, policy: np.ndarray) -> float:
        """J(π) = E r − β KL."""
        return self.expected(policy, self.reward) - self.beta * self.kl(policy)

    def describe(self, policy: np.ndarray, lam: float = float("nan")) -> Optimum:
        """An :class:`Optimum` record of any policy."""
        return Optimum(
            lam=float(lam),
            policy=policy,
            expected_reward=self.expected(policy, self.reward),
            expected_cost=self.expected(policy, self.cost),
            kl=self.kl(policy),
        )

    def min_cost(self) -> float:
        """Σ_x ρ_x min_y c[x, y]: the constraint is feasible only for d above this."""
        return float(self.prompt_weights @ self.cost.min(-1))

    def optimum(self, lam: float | None = None) -> Optimum:
        """The Gibbs policy π_lam, or (``lam=None``) the constrained optimum π* = π_{λ*}.

        Raises:
            InfeasibleError: when d ≤ Σ_x ρ_x min_y c (no policy meets the limit with slack).
        """
        if lam is None:
            lam = self.lambda_star()
        return self.describe(self.gibbs(lam), lam)

    def lambda_star(self) -> float:
        """λ* by root finding on C(λ) = d (0 when the constraint is inactive)."""
        d = self.cost_limit
        if d <= self.min_cost():
            raise InfeasibleError(
                f"cost_limit {d:.6g} is not above the smallest achievable expected cost "
                f"{self.min_cost():.6g}: the constrained problem is infeasible"
            )

        def excess(lam: float) -> float:
            return self.expected(self.gibbs(lam), self.cost) - d

        if excess(0.0) <= 0:
            return 0.0
        hi = 1.0
        while excess(hi) > 0:
            hi *= 2.0
            if hi > 2.0**60:  # pragma: no cover - guarded by the feasibility check
                raise InfeasibleError("λ* did not bracket below 2^60")
        return float(brentq(excess, 0.0, hi, xtol=1e-14, rtol=1e-14))

    def dual(self, lam: float) -> float:
        """D(λ) = β E_ρ log Z_λ + λ d (ALGORITHMS.md §1.3)."""
        logits = np.log(self.ref_probs) + (self.reward - lam * self.cost) / self.beta
        return float(
            self.beta * self.prompt_weights @ logsumexp(logits, axis=-1) + lam * self.cost_limit
        )

    def hard_optimum(self) -> Optimum:
        """π_hard: the λ = 0 Gibbs policy restricted to safe responses (c ≤ 0), SafeDPO's target.

        Raises:
            InfeasibleError: when some prompt has no safe response.
        """
        safe = self.cost <= 0
        if not safe.any(-1).all():
            raise InfeasibleError("some prompt has no safe response: π_hard is undefined")
        logits = np.where(safe, np.log(self.ref_probs) + self.reward / self.beta, -np.inf)
        policy = np.exp(logits - logsumexp(logits, axis=-1, keepdims=True))
        return self.describe(policy, float("inf"))

    def unsafe_mass(self, policy: np.ndarray) -> float:
        """E_ρ P_π(c > 0)."""
        return self.expected(policy, (self.cost > 0).astype(np.float64))


def tv_distance(p: np.ndarray, q: np.ndarray, prompt_weights: np.ndarray | None = None) -> float:
    """Prompt-averaged total variation ½ Σ_y |p − q| (uniform over prompts by default)."""
    per_prompt = 0.5 * np.abs(np.atleast_2d(p) - np.atleast_2d(q)).sum(-1)
    if prompt_weights is None:
        return float(per_prompt.mean())
    return float(prompt_weights @ per_prompt)


def several_constraints_optimum(
    bandit: Bandit, costs: dict[str, Any], limits: dict[str, float]
) -> tuple[dict[str, float], np.ndarray]:
    """The exact optimum with further constraints E[c_i] ≤ d_i beside the bandit's own.

    π_λ ∝ π_ref · exp((r − λ_0 c − Σ_i λ_i c_i)/β), with λ ≥ 0 minimising the convex dual
    D(λ) = β E_ρ log Z_λ + λ_0 d + Σ_i λ_i d_i, whose gradient is d − E_{π_λ}[c] per constraint
    (ALGORITHMS.md §1.3, one term per constraint). Returns ``({"cost": λ_0, name: λ_i, ...},
    π*)``.
    """
    from scipy.optimize import minimize

    names = ["cost", *costs]
    tables = np.stack([bandit.cost, *(np.asarray(_array(costs[n]), float) for n in costs)])
    d = np.array([bandit.cost_limit, *(limits[n] for n in costs)])
    log_ref = np.log(bandit.ref_probs)

    def policy(lam: np.ndarray) -> np.ndarray:
        logits = log_ref + (bandit.reward - np.tensordot(lam, tables, axes=1)) / bandit.beta
        return np.exp(logits - logsumexp(logits, axis=-1, keepdims=True))

    def dual(lam: np.ndarray) -> tuple[float, np.ndarray]:
        logits = log_ref + (bandit.reward - np.tensordot(lam, tables, axes=1)) / bandit.beta
        value = bandit.beta * bandit.prompt_weights @ logsumexp(logits, axis=-1) + lam @ d
        pi = policy(lam)
        expected = np.array([bandit.expected(pi, table) for table in tables])
        return float(value), d - expected

    found = minimize(
        dual,
        np.zeros(len(names)),
        jac=True,
        method="L-BFGS-B",
        bounds=[(0.0, None)] * len(names),
        options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 10_000},
    )
    return dict(zip(names, map(float, found.x))), policy(found.x)
