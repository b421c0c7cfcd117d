"""Lagrange-multiplier update rules.

Every rule keeps one multiplier λ ≥ 0 that multiplies the cost (ALGORITHMS.md §1). A rule is fed
the constraint violation e = Ĵ_C − d, positive when the constraint ``E[c] ≤ d`` is violated, so a
positive violation pushes λ up. ``update`` accepts either that number or a function λ ↦ e(λ) (for
example from an :class:`~constrained_align.primal_dual.estimators.ImportanceEstimate`); every rule
except the exact one-shot rule (:class:`~constrained_align.primal_dual.exact.Exact`) simply
evaluates such a function at its current λ.

Rules hold only plain Python floats, so ``state_dict()`` is JSON-serialisable and a round trip
through JSON restores bit-identical behaviour (``json`` writes floats with ``repr``, which
round-trips exactly).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

Violation = float | Callable[[float], float]
"""A violation e, or a function λ ↦ e(λ) that is non-increasing in λ."""

# Largest φ with exp(φ) finite in float64; LogSGD refuses to step past it rather than store inf.
_LOG_FLOAT_MAX = math.log(1.7976931348623157e308)
# Upper end of Exact's doubling bracket when no max_value is given.
_EXACT_BRACKET_LIMIT = 2.0**60


class DualUnboundedError(RuntimeError):
    """The (empirical) dual has no finite minimiser over λ ≥ 0 within the allowed range."""


@runtime_checkable
class MultiplierRule(Protocol):
    """What PrimalDual needs from a rule: ``value``, ``update`` and the state round trip."""

    @property
    def value(self) -> float: ...

    def update(self, violation: Violation) -> float: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def _evaluate(violation: Violation, lam: float) -> float:
    """Return e as a finite float, calling ``violation(lam)`` when it is a function."""
    e = float(violation(lam)) if callable(violation) else float(violation)
    if not math.isfinite(e):
        # A NaN/inf would poison λ (and every later step) silently; fail where it enters.
        raise ValueError(f"constraint violation must be finite, got {e}")
    return e


def _check_max_value(max_value: float | None, init: float = 0.0) -> float | None:
    if max_value is None:
        return None
    if not max_value > 0:
        raise ValueError(f"max_value must be > 0 or None, got {max_value}")
    if init > max_value:
        raise ValueError(f"init {init} exceeds max_value {max_value}")
    return float(max_value)


def _check_rule(state: dict[str, Any], rule: str) -> None:
    # Loading one rule's state into another would silently reinterpret the numbers.
    if state.get("rule") != rule:
        raise ValueError(f"state_dict is for rule {state.get('rule')!r}, not {rule!r}")


class LogSGD:
    """Safe RLHF's multiplier: plain SGD on φ = log λ.

    With λ = exp(φ) and the λ-loss −e·exp(φ), one SGD step with learning rate ``lr`` is (Dai et al.,
    "Safe RLHF", arXiv 2310.12773, Eq. 31; ALGORITHMS.md §3.1)::

        φ ← φ + lr · λ · e        (λ = exp(φ) taken before the step)
        φ ← min(φ, log max_value)

    There is no lower clamp: λ > 0 by construction, and λ = 0 is unreachable. The step is
    multiplicative, so λ moves slowly near 0.

    Args:
        init: Initial λ; must be > 0 because log 0 does not exist in this parameterisation.
        lr: Learning rate on log λ (``lambda_lr``).
        max_value: Optional upper bound on λ (``lambda_max``).

    Raises:
        ValueError: If ``init`` ≤ 0, ``lr`` < 0, or ``init`` > ``max_value``.
    """

    def __init__(self, *, init: float = 1.0, lr: float = 0.1, max_value: float | None = None):
        if not init > 0:
            raise ValueError(
                f"LogSGD needs init > 0 (got {init}): λ = exp(φ) can never be 0; "
                "use the 'projected' rule to start from λ = 0"
            )
        if not lr >= 0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        self.lr = float(lr)
        self.max_value = _check_max_value(max_value, init)
        self.log_value = math.log(init)

    @property
    def value(self) -> float:
        """Current λ = exp(φ)."""
        return math.exp(self.log_value)

    def update(self, violation: Violation) -> float:
        """One SGD step on log λ; see the class docstring.

        Args:
            violation: e = Ĵ_C − d, or a function λ ↦ e(λ) evaluated at the current λ.

        Returns:
            The new λ.

        Raises:
            OverflowError: If λ would exceed the float64 range (set ``max_value``).
        """
        lam = self.value
        phi = self.log_value + self.lr * lam * _evaluate(violation, lam)
        if self.max_value is not None:
            phi = min(phi, math.log(self.max_value))
        if phi > _LOG_FLOAT_MAX:
            raise OverflowError("LogSGD: λ = exp(log λ) overflowed float64; set max_value")
        self.log_value = phi
        return self.value

    def state_dict(self) -> dict[str, Any]:
        """Return ``{"rule": "log_sgd", "log_value": φ}``."""
        return {"rule": "log_sgd", "log_value": self.log_value}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore φ from :meth:`state_dict`."""
        _check_rule(state, "log_sgd")
        self.log_value = float(state["log_value"])


class Projected:
    """Projected gradient ascent on λ (gradient descent on the dual, ALGORITHMS.md §1.4)::

        λ ← clip(λ + lr · e, 0, max_value)

    With an exact inner solve this is projected gradient descent on the convex dual D(λ), and any
    lr < 2/L with L ≤ (c_max − c_min)² / (4β) converges (§1.4).

    Args:
        init: Initial λ ≥ 0 (``lambda_init``).
        lr: Step size (``lambda_lr``).
        max_value: Optional upper bound on λ (``lambda_max``).

    Raises:
        ValueError: If ``init`` < 0, ``lr`` < 0, or ``init`` > ``max_value``.
    """

    def __init__(self, *, init: float = 0.0, lr: float, max_value: float | None = None):
        if not init >= 0:
            raise ValueError(f"init must be >= 0, got {init}")
        if not lr >= 0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        self.lr = float(lr)
        self.max_value = _check_max_value(max_value, init)
        self.value = float(init)

    def update(self, violation: Violation) -> float:
        """One projected step; ``violation`` as in :meth:`LogSGD.update`. Returns the new λ."""
        lam = max(0.0, self.value + self.lr * _evaluate(violation, self.value))
        if self.max_value is not None:
            lam = min(lam, self.max_value)
        self.value = lam
        return lam

    def state_dict(self) -> dict[str, Any]:
        """Return ``{"rule": "projected", "value": λ}``."""
        return {"rule": "projected", "value": self.value}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore λ from :meth:`state_dict`."""
        _check_rule(state, "projected")
        self.value = float(state["value"])


class PID:
    """PID Lagrangian controller (Stooke, Achiam, Abbeel, arXiv 2007.03964, Alg. 2).

    Per update with violation e_t::

        I      ← max(0, I + ki · e_t)                      integral (plain ascent = I-only)
        P_ema  ← alpha_p · P_ema + (1 − alpha_p) · e_t     proportional, smoothed
        D_ema  ← alpha_d · D_ema + (1 − alpha_d) · e_t     derivative signal, smoothed
        deriv  =  max(0, D_ema_t − D_ema_{t−delay})        only rising cost is damped
        λ      =  clip(kp · P_ema + I + kd · deriv, 0, max_value)

    The paper (and ALGORITHMS.md §3.0) smooths the cost estimate Ĵ_C itself for the derivative term.
    ``update`` only receives e = Ĵ_C − d, and since d is constant the two have the same differences,
    so e is used in place of Ĵ_C. Because the EMAs start at 0, EMA(e)_t = EMA(Ĵ_C)_t − d(1 − α_d^t),
    so the delayed differences agree up to a start-up transient d·α_d^{t−δ}(1 − α_d^δ) that decays
    geometrically (and while fewer than ``delay`` past values exist the term is 0 anyway).

    P_ema and D_ema start at 0. The integral starts at ``init`` so that λ continues from ``init``
    rather than jumping to ≈ 0 at the first update. Defaults are OmniSafe's CPPOPID ones (§3.0).

    Args:
        init: Initial λ, and initial integral I.
        kp: Proportional gain.
        ki: Integral gain (plays the role of a learning rate).
        kd: Derivative gain.
        delay: δ, how many updates back the derivative compares to (≥ 1).
        alpha_p: EMA factor of the proportional term.
        alpha_d: EMA factor of the derivative signal.
        max_value: Upper clip of λ (OmniSafe's ``penalty_max``).

    Raises:
        ValueError: On a negative init or gain, delay < 1, an EMA factor outside [0, 1), or
            init > max_value.
    """

    def __init__(
        self,
        *,
        init: float = 0.001,
        kp: float = 0.1,
        ki: float = 0.01,
        kd: float = 0.01,
        delay: int = 10,
        alpha_p: float = 0.95,
        alpha_d: float = 0.95,
        max_value: float = 100.0,
    ):
        for name, x in (("init", init), ("kp", kp), ("ki", ki), ("kd", kd)):
            if not x >= 0:
                raise ValueError(f"{name} must be >= 0, got {x}")
        if int(delay) != delay or delay < 1:
            raise ValueError(f"delay must be an integer >= 1, got {delay}")
        for name, x in (("alpha_p", alpha_p), ("alpha_d", alpha_d)):
            if not 0 <= x < 1:
                raise ValueError(f"{name} must be in [0, 1), got {x}")
        checked_max = _check_max_value(max_value, init)
        if checked_max is None:
            raise ValueError("PID needs a finite max_value")
        self.kp, self.ki, self.kd = float(kp), float(ki), float(kd)
        self.delay = int(delay)
        self.alpha_p, self.alpha_d = float(alpha_p), float(alpha_d)
        self.max_value = checked_max
        self.value = float(init)
        self.integral = float(init)
        self.p_ema = 0.0
        self.d_ema = 0.0
        # Past D_ema values, oldest first; once full, history[0] is D_ema_{t−delay}.
        self.history: deque[float] = deque(maxlen=self.delay)

    def update(self, violation: Violation) -> float:
        """One controller step; ``violation`` as in :meth:`LogSGD.update`. Returns the new λ."""
        e = _evaluate(violation, self.value)
        self.integral = max(0.0, self.integral + self.ki * e)
        self.p_ema = self.alpha_p * self.p_ema + (1.0 - self.alpha_p) * e
        self.d_ema = self.alpha_d * self.d_ema + (1.0 - self.alpha_d) * e
        past = self.history[0] if len(self.history) == self.delay else self.d_ema
        derivative = max(0.0, self.d_ema - past)
        self.history.append(self.d_ema)
        raw = self.kp * self.p_ema + self.integral + self.kd * derivative
        self.value = min(max(raw, 0.0), self.max_value)
        return self.value

    def state_dict(self) -> dict[str, Any]:
        """Return λ, the integral, both EMAs and the derivative history."""
        return {
            "rule": "pid",
            "value": self.value,
            "integral": self.integral,
            "p_ema": self.p_ema,
            "d_ema": self.d_ema,
            "history": list(self.history),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the controller from :meth:`state_dict`."""
        _check_rule(state, "pid")
        self.value = float(state["value"])
        self.integral = float(state["integral"])
        self.p_ema = float(state["p_ema"])
        self.d_ema = float(state["d_ema"])
        self.history = deque((float(x) for x in state["history"]), maxlen=self.delay)


class Fixed:
    """A constant multiplier (reward shaping, SACPO): ``update`` ignores the violation.

    Args:
        value: The fixed λ ≥ 0.
    """

    def __init__(self, *, value: float):
        if not value >= 0:
            raise ValueError(f"value must be >= 0, got {value}")
        self.value = float(value)

    def update(self, violation: Violation) -> float:
        """Return λ unchanged; the violation is not evaluated."""
        del violation
        return self.value

    def state_dict(self) -> dict[str, Any]:
        """Return ``{"rule": "fixed", "value": λ}``."""
        return {"rule": "fixed", "value": self.value}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore λ from :meth:`state_dict`."""
        _check_rule(state, "fixed")
        self.value = float(state["value"])
