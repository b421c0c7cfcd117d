"""Primal–dual component: multiplier rules, constraint estimators, exact dual solves, the one
builder from a config section (:mod:`.build`) and the one state-file format (:mod:`.state`).

See ALGORITHMS.md §3.0. Internal sign convention: c > 0 is unsafe, the constraint is
E[c] ≤ cost_limit, the violation e = Ĵ_C − cost_limit is positive when violated, and λ ≥ 0
multiplies the cost.
"""

from constrained_align.primal_dual.build import make_primal_dual, safe_dual_lr
from constrained_align.primal_dual.estimators import EMA, BatchMean, ImportanceEstimate, WindowMean
from constrained_align.primal_dual.exact import Exact, solve_dual, solve_dual_multi
from constrained_align.primal_dual.multipliers import (
    PID,
    DualUnboundedError,
    Fixed,
    LogSGD,
    MultiplierRule,
    Projected,
)
from constrained_align.primal_dual.primal_dual import Constraint, PrimalDual, build_multiplier
from constrained_align.primal_dual.state import (
    DUAL_STATE_NAME,
    load_dual_state,
    read_dual_state,
    save_dual_state,
)

__all__ = [
    "DUAL_STATE_NAME",
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
    "load_dual_state",
    "make_primal_dual",
    "read_dual_state",
    "safe_dual_lr",
    "save_dual_state",
    "solve_dual",
    "solve_dual_multi",
]
