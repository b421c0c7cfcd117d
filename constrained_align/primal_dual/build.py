"""The one place that builds a :class:`PrimalDual` from a config section.

Every algorithm, the TRL trainer and the TRL callback call :func:`make_primal_dual`, so a
``dual:`` section means the same thing wherever it is read.
"""

from __future__ import annotations

from constrained_align.config import DualConfig
from constrained_align.primal_dual.estimators import BatchMean, WindowMean
from constrained_align.primal_dual.primal_dual import Constraint, PrimalDual, build_multiplier


def safe_dual_lr(beta: float, cost_range: float) -> float:
    """η = 8β/(c_max − c_min)², below 2/L for the dual's smoothness L (ALGORITHMS.md §1.4)."""
    if cost_range <= 0:
        raise ValueError("cannot size the dual step: every observed cost is the same")
    return 8.0 * beta / cost_range**2


def make_primal_dual(
    dual: DualConfig, *, beta: float, cost_range: float | None = None, init: float | None = None
) -> PrimalDual:
    """The run's PrimalDual, built from the config: the constraint ``cost`` and one more per
    entry of ``dual.constraints`` (its own λ, estimator and limit; the rule's settings shared).

    Args:
        dual: the config section.
        beta: KL weight (for the default step size).
        cost_range: c_max − c_min of the scores seen, when ``lambda_lr`` is null.
        init: overrides ``lambda_init`` (warm starts from the one-shot dual).
    """
    lr = dual.lambda_lr
    if lr is None and dual.multiplier in ("projected", "log_sgd", "pid"):
        if cost_range is None:
            raise ValueError("lambda_lr is null (auto) but no cost range is known to size it")
        lr = safe_dual_lr(beta, cost_range)
    limits = {"cost": dual.cost_limit, **dual.constraints}

    def constraint(limit: float) -> Constraint:
        rule = build_multiplier(
            dual.multiplier,
            init=dual.lambda_init if init is None else init,
            lr=lr,
            max_value=dual.lambda_max,
            kp=dual.pid.kp,
            ki=dual.pid.ki,
            kd=dual.pid.kd,
            delay=dual.pid.delay,
            alpha_p=dual.pid.alpha_p,
            alpha_d=dual.pid.alpha_d,
        )
        estimator = WindowMean(dual.cost_window) if dual.cost_window > 0 else BatchMean()
        return Constraint(
            rule=rule,
            estimator=estimator,
            cost_limit=limit,
            update_every=dual.dual_update_every,
            delay_steps=dual.dual_delay_steps,
        )

    return PrimalDual({name: constraint(limit) for name, limit in limits.items()})
