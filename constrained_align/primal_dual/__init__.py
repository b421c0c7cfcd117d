"""Primal–dual component: multiplier rules, constraint estimators, exact dual solves.

See ALGORITHMS.md §3.0. Internal sign convention: c > 0 is unsafe, the constraint is
E[c] ≤ cost_limit, the violation e = Ĵ_C − cost_limit is positive when violated, and λ ≥ 0
multiplies the cost.
"""

from constrained_align.primal_dual.estimators import EMA, BatchMean, ImportanceEstimate, WindowMean
from constrained_align.primal_dual.exact import solve_dual, solve_dual_multi
from constrained_align.primal_dual.multipliers import (
    PID,
    DualUnboundedError,
    Exact,
    Fixed,
    LogSGD,
    MultiplierRule,
    Projected,
)
from constrained_align.primal_dual.primal_dual import Constraint, PrimalDual, build_multiplier

__all__ = [
    "EMA",
    "PID",
    "BatchMean",
    "Constraint",
    "DualUnboundedError",
    "Exact",
    "Fixed",
    "ImportanceEstimate",
    "LogSGD",
    "MultiplierRule",
    "PrimalDual",
    "Projected",
    "WindowMean",
    "build_multiplier",
    "solve_dual",
    "solve_dual_multi",
]
