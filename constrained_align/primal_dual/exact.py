"""One-shot solves of the plug-in (empirical) dual on scored reference samples.

Huang, Li, Dobriban, Bastani, Hassani, Ding, "One-Shot Safety Alignment for Large Language Models
via Optimal Dualization" (CAN), arXiv 2405.19544; ALGORITHMS.md §1.3 and §3.6. In the internal
convention (c > 0 unsafe, constraint E[c] ≤ d, λ ≥ 0 on the cost) the plug-in dual is

    D̂(λ) = β Σ_x ρ_x logsumexp_j((r_xj − λ·c_xj)/β + log w̃_xj) + λ·d,
    ∇D̂(λ) = d − Σ_x ρ_x Σ_j π̂_λ(j | x) c_xj,

convex in λ, and λ* = argmin_{λ ≥ 0} D̂(λ). It has a finite minimiser only under Slater's condition
on the samples, d > Σ_x ρ_x min_j c_xj; otherwise λ → ∞ (§3.6 pitfall 2), which is reported as
:class:`~constrained_align.primal_dual.multipliers.DualUnboundedError` rather than clipped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from scipy.optimize import brentq, minimize
from scipy.special import logsumexp

from constrained_align.primal_dual.estimators import (
    ImportanceEstimate,
    _as_float64,
    normalised_log_weights,
    normalised_prompt_weights,
)
from constrained_align.primal_dual.multipliers import (
    _EXACT_BRACKET_LIMIT,
    DualUnboundedError,
    Violation,
    _check_max_value,
    _check_rule,
    _evaluate,
)

ArrayLike = torch.Tensor | np.ndarray

# Upper end of the search when no max_value is given (as in Exact): a λ that runs to it means the
# dual decreases without bound, and stopping there keeps L-BFGS-B from chasing λ → ∞ for long.
_LAMBDA_LIMIT = 2.0**60
# Largest allowed |projected gradient| (in cost units, relative to the cost spread) at the
# L-BFGS-B answer; beyond it the result is not a minimiser and is refused.
_KKT_RTOL = 1e-6


def solve_dual(
    reward: ArrayLike,
    cost: ArrayLike,
    *,
    beta: float,
    cost_limit: float,
    weights: ArrayLike | None = None,
    prompt_weights: ArrayLike | None = None,
    max_value: float | None = None,
) -> float:
    """Solve the one-constraint CAN plug-in dual exactly.

    Finds λ* ≥ 0 with C(λ*) = d (or 0 when C(0) ≤ d), where C is the self-normalised importance
    estimate of :class:`~constrained_align.primal_dual.estimators.ImportanceEstimate`, by bracketing
    and Brent's method (:class:`~constrained_align.primal_dual.multipliers.Exact`).

    Args:
        reward: (K, M) reward scores of M reference samples for K prompts (numpy or torch).
        cost: (K, M) cost scores.
        beta: KL weight β > 0; must be the β used for training on the result.
        cost_limit: d in the constraint E[c] ≤ d.
        weights: Optional (K, M) base weights (e.g. π_ref probabilities of enumerated responses).
        prompt_weights: Optional (K,) prompt weights ρ; uniform by default.
        max_value: Optional upper bound; a λ* above it raises instead of being clipped.

    Returns:
        λ* as a float.

    Raises:
        DualUnboundedError: If d ≤ Σ_x ρ_x min_j c_xj (no finite minimiser) or λ* > max_value.
    """
    estimate = ImportanceEstimate(
        reward, cost, beta=beta, weights=weights, prompt_weights=prompt_weights
    )
    bound = estimate.min_cost()
    if not cost_limit > bound:
        raise DualUnboundedError(
            f"cost_limit = {cost_limit:.6g} is at or below the smallest achievable cost on the "
            f"samples, Σ_x ρ_x min_j c_xj = {bound:.6g}: every sample violates the constraint and "
            "the empirical dual has no finite minimiser (λ* → ∞). Use more reference samples per "
            "prompt or a larger cost_limit."
        )
    rule = Exact(max_value=max_value)
    return rule.update(lambda lam: estimate(lam) - cost_limit)


def solve_dual_multi(
    reward: ArrayLike,
    costs: ArrayLike,
    *,
    beta: float,
    cost_limits: ArrayLike | list[float],
    weights: ArrayLike | None = None,
    prompt_weights: ArrayLike | None = None,
    max_value: float | None = None,
) -> np.ndarray:
    """Solve the CAN plug-in dual for m constraints E[c_k] ≤ d_k jointly.

    Minimises D̂(λ) of the module docstring over λ ∈ [0, max_value]^m (2^60 when None) with
    ``scipy.optimize.minimize(method="L-BFGS-B")`` and the analytic gradient d − E_{π̂_λ}[c]. The
    answer is accepted when it satisfies the bound-constrained first-order conditions (projected
    gradient ≤ 1e-6 × the cost spread), even if scipy flags a line-search stop near the optimum.

    Args:
        reward: (K, M) reward scores.
        costs: (K, M, m) cost scores, one slice per constraint.
        beta: KL weight β > 0.
        cost_limits: (m,) limits d_k.
        weights: Optional (K, M) base weights, as in :func:`solve_dual`.
        prompt_weights: Optional (K,) prompt weights ρ.
        max_value: Optional upper bound on every λ_k; a minimiser beyond it raises.

    Returns:
        λ* as a float64 numpy array of shape (m,).

    Raises:
        DualUnboundedError: If some d_k ≤ Σ_x ρ_x min_j c_xjk; if some λ_k runs to the upper
            bound while the dual still decreases (λ_k* > max_value, or no finite minimiser, e.g.
            constraints that cannot hold together on the samples); or if the optimiser stops
            away from a minimiser (scipy's message included).
    """
    r, c, d, log_w, rho = _checked_multi_inputs(
        reward, costs, cost_limits, beta=beta, weights=weights, prompt_weights=prompt_weights
    )

    r_np, c_np, d_np = r.numpy(), c.numpy(), d.numpy()
    log_w_np, rho_np = log_w.numpy(), rho.numpy()

    def dual_and_grad(lam: np.ndarray) -> tuple[float, np.ndarray]:
        logits = (r_np - c_np @ lam) / beta + log_w_np  # (K, M)
        lse = logsumexp(logits, axis=1)  # (K,)
        probs = np.exp(logits - lse[:, None])  # (K, M)
        expected_cost = np.einsum("x,xj,xjk->k", rho_np, probs, c_np)  # (m,)
        return beta * float(rho_np @ lse) + float(lam @ d_np), d_np - expected_cost

    m = d.numel()
    upper = _LAMBDA_LIMIT if max_value is None else float(max_value)
    result = minimize(
        dual_and_grad,
        x0=np.zeros(m),
        jac=True,
        method="L-BFGS-B",
        bounds=[(0.0, upper)] * m,
        options={"maxiter": 2_000, "ftol": 1e-15, "gtol": 1e-12},
    )
    lam = np.asarray(result.x, dtype=np.float64)
    _, grad = dual_and_grad(lam)
    _check_multi_solution(lam, grad, c, upper=upper, max_value=max_value, message=result.message)
    return lam


def _checked_multi_inputs(
    reward: Any, costs: Any, cost_limits: Any, *, beta: float, weights: Any, prompt_weights: Any
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validated float64 (reward, costs, limits, log-weights, ρ); raises on a Slater failure."""
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    r = _as_float64(reward)
    c = _as_float64(costs)
    d = _as_float64(cost_limits).reshape(-1)  # (m,)
    if r.dim() != 2 or c.dim() != 3 or tuple(c.shape) != (*r.shape, d.numel()):
        raise ValueError(
            "expected reward (K, M), costs (K, M, m) and cost_limits (m,), got "
            f"{tuple(r.shape)}, {tuple(c.shape)} and {tuple(d.shape)}"
        )
    if not (torch.isfinite(r).all() and torch.isfinite(c).all() and torch.isfinite(d).all()):
        raise ValueError("reward, costs and cost_limits must be finite")
    log_w = normalised_log_weights(weights, tuple(r.shape))  # (K, M)
    rho = normalised_prompt_weights(prompt_weights, r.shape[0])  # (K,)

    # Slater bound per constraint, over samples that have positive base weight.
    support = torch.isfinite(log_w).unsqueeze(-1)  # (K, M, 1)
    bounds_k = (rho[:, None] * torch.where(support, c, torch.inf).amin(dim=1)).sum(0)  # (m,)
    bad = [k for k in range(d.numel()) if not d[k] > bounds_k[k]]
    if bad:
        detail = ", ".join(f"k={k}: d={d[k]:.6g} <= {bounds_k[k]:.6g}" for k in bad)
        raise DualUnboundedError(
            "cost limit at or below the smallest achievable cost Σ_x ρ_x min_j c_xjk on the "
            f"samples ({detail}): the empirical dual has no finite minimiser. Use more reference "
            "samples per prompt or larger cost_limits."
        )

    return r, c, d, log_w, rho


def _check_multi_solution(
    lam: np.ndarray,
    grad: np.ndarray,
    c: torch.Tensor,
    *,
    upper: float,
    max_value: float | None,
    message: str,
) -> None:
    """Raise ``DualUnboundedError`` unless ``lam`` satisfies the KKT conditions of the dual."""
    scale = _KKT_RTOL * max(1.0, float(c.max() - c.min()))
    at_top = lam >= upper
    if np.any(at_top & (grad < -scale)):
        where = f"max_value = {max_value}" if max_value is not None else f"{upper:.3g}"
        raise DualUnboundedError(
            f"the dual keeps decreasing at λ_k = {where} (λ = {lam.tolist()}, violations "
            f"{(-grad).tolist()}): the minimiser lies above it or does not exist. The "
            "constraints may not be jointly satisfiable on these samples; raise max_value, use "
            "more reference samples or larger cost_limits."
        )
    # Projected gradient: a free coordinate needs grad ≈ 0, one at λ_k = 0 needs grad ≥ 0.
    projected = np.where(lam > 0.0, grad, np.minimum(grad, 0.0))
    projected = np.where(at_top, np.maximum(grad, 0.0), projected)
    if np.max(np.abs(projected)) > scale:
        raise DualUnboundedError(
            f"L-BFGS-B did not reach the dual minimiser ({message}; projected gradient "
            f"{projected.tolist()} at λ = {lam.tolist()}). The constraints may not be jointly "
            "satisfiable on these samples, in which case the empirical dual has no finite "
            "minimiser; use more reference samples or larger cost_limits."
        )


class Exact:
    """Exact minimiser of a 1-D convex dual, from its derivative.

    Given e(λ) = C(λ) − d = −D'(λ), non-increasing in λ, the minimiser of D over λ ≥ 0 is λ* = 0
    when e(0) ≤ 0, and otherwise the root of e(λ) = 0 (ALGORITHMS.md §1.3, §5.2). The root is
    bracketed by doubling from λ = 1 and then found with Brent's method (``scipy.optimize.brentq``).
    This is the one-shot CAN dual solve (Huang et al., arXiv 2405.19544) when e comes from an
    importance estimate on reference samples.

    The initial value, before any update, is 0.

    Args:
        max_value: Optional upper end of the search. A root above it raises rather than being
            clipped, because a clipped λ silently violates the constraint.
        tol: Absolute tolerance on λ passed to ``brentq``.
    """

    def __init__(self, *, max_value: float | None = None, tol: float = 1e-10):
        if not tol > 0:
            raise ValueError(f"tol must be > 0, got {tol}")
        self.max_value = _check_max_value(max_value)
        self.tol = float(tol)
        self.value = 0.0

    def update(self, violation: Violation) -> float:
        """Solve e(λ) = 0 for λ ≥ 0 and store the result.

        Args:
            violation: The function λ ↦ e(λ), non-increasing in λ.

        Returns:
            λ*.

        Raises:
            TypeError: If ``violation`` is a number: one value of e says nothing about the root.
            DualUnboundedError: If e(λ) > 0 at the top of the bracket (2^60, or ``max_value``).
        """
        if not callable(violation):
            raise TypeError(
                "Exact.update needs a function λ ↦ e(λ) (e.g. from ImportanceEstimate), not a "
                f"number ({violation!r}): the root of e cannot be found from one value"
            )

        def fn(lam: float) -> float:
            return _evaluate(violation, float(lam))

        if fn(0.0) <= 0.0:
            self.value = 0.0
            return self.value
        limit = _EXACT_BRACKET_LIMIT if self.max_value is None else self.max_value
        lo, hi = 0.0, min(1.0, limit)
        while (e_hi := fn(hi)) > 0.0:
            if hi >= limit:
                self._raise_unbounded(fn, e_hi)
            lo, hi = hi, min(2.0 * hi, limit)
        root = hi if e_hi == 0.0 else brentq(fn, lo, hi, xtol=self.tol)
        self.value = float(root)
        return self.value

    def _raise_unbounded(self, fn: Callable[[float], float], e_limit: float) -> None:
        top = _EXACT_BRACKET_LIMIT if self.max_value is None else self.max_value
        if abs(fn(0.0) - e_limit) <= 1e-9 * max(1.0, abs(e_limit)):
            raise DualUnboundedError(
                f"the dual is flat: the violation is {e_limit:.6g} at λ = 0 and at λ = {top:.3g}, "
                "so λ cannot move the policy; beta is too large for the scores' spread"
            )
        if self.max_value is not None and fn(_EXACT_BRACKET_LIMIT) <= 0.0:  # root above max
            raise DualUnboundedError(
                f"the dual minimiser λ* is > max_value = {self.max_value} (violation "
                f"e(max_value) = {e_limit:.6g} > 0); raise max_value or relax the cost limit"
            )
        raise DualUnboundedError(
            "the empirical dual has no finite minimiser: the violation stays positive "
            f"(e = {e_limit:.6g}) as λ → ∞, i.e. the cost limit is at or below the smallest "
            "cost achievable on the given samples (every sample violates it). Use more "
            "reference samples per prompt or a larger cost_limit."
        )

    def state_dict(self) -> dict[str, Any]:
        """Return ``{"rule": "exact", "value": λ}``."""
        return {"rule": "exact", "value": self.value}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore λ from :meth:`state_dict`."""
        _check_rule(state, "exact")
        self.value = float(state["value"])
