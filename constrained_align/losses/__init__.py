"""Pure loss functions: score models, the preference family and policy-gradient terms.

Every loss takes tensors and keyword-only hyper-parameters and returns ``(loss, metrics)``: a
differentiable scalar and a ``dict[str, float]`` of detached metrics. Batch reductions are
weighted means ``sum(w · l) / sum(w)`` over an optional ``(B,)`` ``weight`` (uniform when None),
so population-mode batches give exact expectations. The advantage and label helpers
(:func:`gae`, :func:`group_relative_advantages`, :func:`lagrangian_advantages`,
:func:`lagrangian_preference`,
:func:`bfpo_targets`, :func:`safe_dpo_relabel`) return tensors.
"""

from constrained_align.losses.policy_gradient import (
    clipped_value_loss,
    gae,
    group_relative_advantages,
    kl_penalty_loss,
    lagrangian_advantages,
    ppo_clip_loss,
)
from constrained_align.losses.preference import (
    bfpo_targets,
    dpo_loss,
    ipo_squared_loss,
    lagrangian_preference,
    safe_dpo_loss,
    safe_dpo_relabel,
)
from constrained_align.losses.score import cost_model_loss, reward_model_loss

__all__ = [
    "bfpo_targets",
    "clipped_value_loss",
    "cost_model_loss",
    "dpo_loss",
    "gae",
    "group_relative_advantages",
    "ipo_squared_loss",
    "kl_penalty_loss",
    "lagrangian_advantages",
    "lagrangian_preference",
    "ppo_clip_loss",
    "reward_model_loss",
    "safe_dpo_loss",
    "safe_dpo_relabel",
]
