"""The TRL plug-ins: the only package that imports trl.

:class:`ConstrainedDPOTrainer` is a ``trl.DPOTrainer`` subclass that trains one of our offline
losses (``dpo``, ``lagrangian``, ``safe_dpo``, ``bfpo``) on canonical pair rows, keeps the safety
columns TRL would drop, drives λ with our PrimalDual and saves it with every checkpoint.
"""

from constrained_align.integrations.trl.columns import EXTRA_COLUMNS, SafetyColumnsCollator
from constrained_align.integrations.trl.dpo import ConstrainedDPOTrainer
from constrained_align.integrations.trl.dual import snis_estimate, snis_weights
from constrained_align.integrations.trl.lagrangian import LagrangianCallback, make_lagrangian
from constrained_align.integrations.trl.lagrangian_checks import RewardWeightsError
from constrained_align.integrations.trl.pair_losses import LOSSES, LossParams, LossSpec, PairTerms
from constrained_align.integrations.trl.score_funcs import CostFunction, ScoreFunction
from constrained_align.primal_dual import DUAL_STATE_NAME

__all__ = [
    "DUAL_STATE_NAME",
    "EXTRA_COLUMNS",
    "LOSSES",
    "ConstrainedDPOTrainer",
    "CostFunction",
    "LagrangianCallback",
    "LossParams",
    "LossSpec",
    "PairTerms",
    "RewardWeightsError",
    "SafetyColumnsCollator",
    "ScoreFunction",
    "make_lagrangian",
    "snis_estimate",
    "snis_weights",
]
