"""The TRL plug-in seam: the only package that imports trl.

:class:`ConstrainedDPOTrainer` is a ``trl.DPOTrainer`` subclass that trains one of our offline
losses (``dpo``, ``lagrangian``, ``safe_dpo``, ``bfpo``) on canonical pair rows, keeps the safety
columns TRL would drop, drives λ with our PrimalDual and saves it with every checkpoint.
"""

from constrained_align.trainers.trl.columns import EXTRA_COLUMNS, SafetyColumnsCollator
from constrained_align.trainers.trl.dpo import ConstrainedDPOTrainer
from constrained_align.trainers.trl.dual import DUAL_STATE_NAME, snis_estimate, snis_weights
from constrained_align.trainers.trl.lagrangian import (
    LagrangianCallback,
    RewardWeightsError,
    make_lagrangian,
)
from constrained_align.trainers.trl.pair_losses import LOSSES, LossParams, LossSpec, PairTerms
from constrained_align.trainers.trl.score_funcs import CostFunction, ScoreFunction

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
