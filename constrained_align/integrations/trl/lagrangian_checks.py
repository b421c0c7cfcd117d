"""The checks :class:`~constrained_align.integrations.trl.lagrangian.LagrangianCallback` runs
before it drives a trainer: the internal reward weights it writes λ into, the user's own weight
on the cost, the PrimalDual it is given or builds.
"""

from __future__ import annotations

from typing import Any

import trl
from torch import Tensor

from constrained_align.config import DualConfig
from constrained_align.primal_dual import Exact, PrimalDual, make_primal_dual


class RewardWeightsError(RuntimeError):
    """``trainer.reward_weights`` is missing or not the tensor trl 1.16 reads at scoring time."""


def check_user_cost_weight(trainer: Any, cost_index: int) -> None:
    """Refuse a weight the user gave the cost function: the callback sets it to −λ. (Weights of
    the other reward functions are kept: λ is then the multiplier of E[c] ≤ d for the weighted
    sum of rewards, in that sum's units.)"""
    given = getattr(getattr(trainer, "args", None), "reward_weights", None)
    if given is not None and float(given[cost_index]) != 1.0:
        raise ValueError(
            f"reward_weights[{cost_index}] = {given[cost_index]} is the cost function's weight, "
            "which the LagrangianCallback sets to −λ at every step; leave it at 1 and scale "
            "the other reward functions' weights instead"
        )


def checked_reward_weights(trainer: Any) -> Tensor:
    """The trainer's ``reward_weights``: a 1-D float tensor, one weight per reward function.

    Raises:
        RewardWeightsError: if the internal attribute is missing or has another type or shape.
    """
    weights = getattr(trainer, "reward_weights", None)
    funcs = getattr(trainer, "reward_funcs", None)
    ok = (
        isinstance(weights, Tensor)
        and weights.ndim == 1
        and weights.is_floating_point()
        and funcs is not None
        and weights.numel() == len(funcs)
    )
    if not ok:
        found = "missing" if weights is None else f"{type(weights).__name__} {_shape(weights)}"
        raise RewardWeightsError(
            f"{type(trainer).__name__}.reward_weights is {found}; expected a 1-D float tensor with "
            f"one weight per reward function ({len(funcs or [])}). LagrangianCallback writes −λ "
            "into this internal TRL attribute, which trl 1.16 reads each time it scores a "
            f"generation batch; the installed trl {trl.__version__} does not provide it as "
            "expected. Pin trl~=1.16 or adapt constrained_align.integrations.trl.lagrangian."
        )
    return weights


def _shape(value: Any) -> str:
    return str(tuple(value.shape)) if hasattr(value, "shape") else ""


def check_primal_dual(primal_dual: PrimalDual, name: str) -> None:
    """Exactly one constraint, ``name``, with an on-policy estimator and a stepwise rule."""
    if set(primal_dual.constraints) != {name}:
        raise ValueError(
            f"LagrangianCallback drives one constraint, {name!r}; the PrimalDual has "
            f"{sorted(primal_dual.constraints)}"
        )
    constraint = primal_dual.constraints[name]
    if constraint.estimator is None:
        raise ValueError(
            f"constraint {name!r} has no estimator; the callback feeds raw on-policy costs, so "
            "give it a WindowMean, BatchMean or EMA"
        )
    if isinstance(constraint.rule, Exact):
        raise ValueError("the exact rule needs λ ↦ e(λ), not on-policy costs; use another rule")


def build_primal_dual(primal_dual: PrimalDual | None, dual: DualConfig | None) -> PrimalDual:
    if (primal_dual is None) == (dual is None):
        raise ValueError("pass exactly one of primal_dual and dual")
    if primal_dual is not None:
        return primal_dual
    if dual.lambda_lr is None and dual.multiplier in ("projected", "log_sgd", "pid"):
        raise ValueError(
            "dual.lambda_lr is null (auto), but online training knows no cost range to size the "
            "dual step (8β/(c_max − c_min)², ALGORITHMS.md §1.4): set lambda_lr, or pass "
            "primal_dual=make_primal_dual(dual, beta=..., cost_range=...)"
        )
    return make_primal_dual(dual, beta=0.0)
