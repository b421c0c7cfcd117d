"""The one primal–dual component: constraints keyed by name, each a rule + estimator + cadence.

ALGORITHMS.md §3.0. An algorithm feeds per-sample raw costs (``observe``) or a function λ ↦ e(λ)
(``step(..., violation_fns=...)``), calls ``step`` on its cadence, reads λ with ``lam(name)``, logs
``metrics()`` and saves ``state_dict()`` in every checkpoint, so λ, the rule's state and the cost
window all survive a resume (safe-rlhf issue #138 is the failure this prevents).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from constrained_align.primal_dual.estimators import EMA, ArrayLike, BatchMean, WindowMean
from constrained_align.primal_dual.exact import Exact
from constrained_align.primal_dual.multipliers import (
    PID,
    Fixed,
    LogSGD,
    MultiplierRule,
    Projected,
)
from constrained_align.types import check_finite

Estimator = WindowMean | BatchMean | EMA

_RULE_NAMES = ("log_sgd", "projected", "pid", "fixed", "exact")


@dataclass
class Constraint:
    """One constraint E[c] ≤ ``cost_limit`` and how its multiplier is driven.

    Attributes:
        rule: The multiplier rule (LogSGD, Projected, PID, Fixed, Exact or any MultiplierRule).
        estimator: On-policy cost estimator fed by ``PrimalDual.observe``; None when the violation
            always comes from ``violation_fns`` (e.g. an Exact rule on an importance estimate).
        cost_limit: d, in the internal convention (c > 0 unsafe).
        update_every: Update λ only on steps that are multiples of this (``dual_update_every``).
        delay_steps: No update before this global step (``dual_delay_steps``; Safe RLHF's
            ``lambda_update_delay_steps``).
    """

    rule: MultiplierRule
    estimator: Estimator | None
    cost_limit: float
    update_every: int = 1
    delay_steps: int = 0

    def __post_init__(self) -> None:
        if self.update_every < 1:
            raise ValueError(f"update_every must be >= 1, got {self.update_every}")
        if self.delay_steps < 0:
            raise ValueError(f"delay_steps must be >= 0, got {self.delay_steps}")


def _suffix(name: str) -> str:
    # The single default constraint keeps the plain metric keys of DESIGN.md.
    return "" if name == "cost" else f"/{name}"


def _memoised(fn: Callable[[float], float]) -> Callable[[float], float]:
    """Cache fn by λ so the value recorded for metrics is not recomputed by the rule."""
    cache: dict[float, float] = {}

    def wrapped(lam: float) -> float:
        key = float(lam)
        if key not in cache:
            cache[key] = float(fn(key))
        return cache[key]

    return wrapped


class PrimalDual:
    """Multipliers for named constraints, with their estimators, cadence and saved state.

    Args:
        constraints: ``{name: Constraint}``; name "cost" is the default single constraint.
    """

    def __init__(self, constraints: dict[str, Constraint]):
        if not constraints:
            raise ValueError("PrimalDual needs at least one constraint")
        self.constraints = dict(constraints)
        self._last_estimate: dict[str, float] = {}
        self._last_violation: dict[str, float] = {}

    def _get(self, name: str) -> Constraint:
        try:
            return self.constraints[name]
        except KeyError:
            raise KeyError(
                f"unknown constraint {name!r}; known: {sorted(self.constraints)}"
            ) from None

    def observe(self, name: str, costs: ArrayLike, weights: ArrayLike | None = None) -> None:
        """Feed per-sample raw costs (not critic values, not KL-shaped) to ``name``'s estimator.

        Args:
            name: Constraint name.
            costs: Per-sample costs, any shape (flattened).
            weights: Optional non-negative per-sample weights.

        Raises:
            KeyError: On an unknown name.
            ValueError: If the constraint has no estimator.
            TrainingError: If a cost is not finite (the cost model's output diverged).
        """
        constraint = self._get(name)
        check_finite(
            torch.as_tensor(costs, dtype=torch.float64),
            f"a cost observed for constraint {name!r}",
            "the dual's input",
        )
        if constraint.estimator is None:
            raise ValueError(
                f"constraint {name!r} has no estimator; pass its violation to step() through "
                "violation_fns instead"
            )
        constraint.estimator.add(costs, weights)

    def step(
        self,
        global_step: int,
        violation_fns: dict[str, Callable[[float], float]] | None = None,
    ) -> dict[str, float]:
        """Update every constraint that is due at ``global_step``.

        A constraint is due when ``global_step >= delay_steps`` and
        ``global_step % update_every == 0``. Its violation is ``violation_fns[name]`` when given
        (a function λ ↦ e(λ), needed by Exact), else ``estimator.value() − cost_limit``.

        Args:
            global_step: The caller's step counter.
            violation_fns: Optional ``{name: λ ↦ e(λ)}``.

        Returns:
            ``{name: λ}`` after the step.

        Raises:
            KeyError: If ``violation_fns`` names an unknown constraint.
            ValueError: If a due constraint has neither a violation function nor an estimator, or
                its estimator is empty.
        """
        fns = dict(violation_fns or {})
        unknown = set(fns) - set(self.constraints)
        if unknown:
            raise KeyError(
                f"violation_fns has unknown constraints {sorted(unknown)}; "
                f"known: {sorted(self.constraints)}"
            )
        for name, constraint in self.constraints.items():
            if global_step < constraint.delay_steps or global_step % constraint.update_every:
                continue
            rule = constraint.rule
            if name in fns:
                violation: float | Callable[[float], float] = _memoised(fns[name])
                # Recorded at the λ the update starts from, like the estimator case below.
                e = violation(rule.value)
            elif constraint.estimator is not None:
                e = constraint.estimator.value() - constraint.cost_limit
                violation = e
            else:
                raise ValueError(
                    f"constraint {name!r} has no estimator and no violation function was given"
                )
            rule.update(violation)
            check_finite(rule.value, f"λ of constraint {name!r}", f"dual step {global_step}")
            self._last_violation[name] = e
            self._last_estimate[name] = e + constraint.cost_limit
        return self.lambdas

    @property
    def lambdas(self) -> dict[str, float]:
        """Current ``{name: λ}``."""
        return {name: float(c.rule.value) for name, c in self.constraints.items()}

    def lam(self, name: str = "cost") -> float:
        """Current λ of one constraint."""
        return float(self._get(name).rule.value)

    def metrics(self) -> dict[str, float]:
        """``dual/lambda``, ``constraint/cost_estimate``, ``constraint/violation`` per constraint.

        Keys carry a ``/name`` suffix except for the constraint named "cost". The estimate and
        violation appear only once a step has computed them.
        """
        out: dict[str, float] = {}
        for name, constraint in self.constraints.items():
            suffix = _suffix(name)
            out[f"dual/lambda{suffix}"] = float(constraint.rule.value)
            if name in self._last_violation:
                out[f"constraint/cost_estimate{suffix}"] = self._last_estimate[name]
                out[f"constraint/violation{suffix}"] = self._last_violation[name]
        return out

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state: per constraint the rule, the estimator and the last metrics."""
        return {
            "constraints": {
                name: {
                    "rule": c.rule.state_dict(),
                    "estimator": None if c.estimator is None else c.estimator.state_dict(),
                    "last_estimate": self._last_estimate.get(name),
                    "last_violation": self._last_violation.get(name),
                }
                for name, c in self.constraints.items()
            }
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`; the constraint names must match exactly.

        Raises:
            ValueError: If the saved and current constraint names differ, or an estimator is
                present on one side only.
        """
        saved = state["constraints"]
        if set(saved) != set(self.constraints):
            raise ValueError(
                f"saved constraints {sorted(saved)} do not match {sorted(self.constraints)}"
            )
        for name, constraint in self.constraints.items():
            entry = saved[name]
            if (entry["estimator"] is None) != (constraint.estimator is None):
                raise ValueError(f"constraint {name!r}: estimator presence differs from the save")
            constraint.rule.load_state_dict(entry["rule"])
            if constraint.estimator is not None:
                constraint.estimator.load_state_dict(entry["estimator"])
            self._last_estimate.pop(name, None)
            self._last_violation.pop(name, None)
            if entry["last_violation"] is not None:
                self._last_violation[name] = float(entry["last_violation"])
                self._last_estimate[name] = float(entry["last_estimate"])


def build_multiplier(
    name: str,
    *,
    init: float,
    lr: float,
    max_value: float | None,
    **pid_kwargs: Any,
) -> MultiplierRule:
    """Build a rule from the config names (``multiplier``, ``lambda_init``, ``lambda_lr``, ...).

    Mapping: ``log_sgd`` → LogSGD(init, lr, max_value); ``projected`` → Projected(init, lr,
    max_value); ``pid`` → PID(init, max_value (100 when None), **pid_kwargs), where ``ki`` plays the
    role of ``lr``; ``fixed`` → Fixed(value=init); ``exact`` → Exact(max_value). Arguments a rule
    does not use (``lr`` for pid/fixed/exact, ``pid_kwargs`` for non-pid rules) are ignored, so one
    config can be forwarded whatever the rule.

    Args:
        name: One of ``log_sgd``, ``projected``, ``pid``, ``fixed``, ``exact``.
        init: Initial λ.
        lr: Dual learning rate.
        max_value: Upper bound on λ, or None.
        **pid_kwargs: ``kp``, ``ki``, ``kd``, ``delay``, ``alpha_p``, ``alpha_d`` for ``pid``.

    Returns:
        The rule.

    Raises:
        ValueError: On an unknown name.
    """
    if name == "log_sgd":
        return LogSGD(init=init, lr=lr, max_value=max_value)
    if name == "projected":
        return Projected(init=init, lr=lr, max_value=max_value)
    if name == "pid":
        return PID(init=init, max_value=100.0 if max_value is None else max_value, **pid_kwargs)
    if name == "fixed":
        return Fixed(value=init)
    if name == "exact":
        return Exact(max_value=max_value)
    raise ValueError(f"unknown multiplier {name!r}; valid: {', '.join(_RULE_NAMES)}")
