"""``bfpo``: Bi-Factorial Preference Optimization (Zhang et al., arXiv 2408.15313), §3.11.

An IPO-style squared loss whose target comes from a fixed labelling function of the two
responses' safety, with y^hw the more helpful response:
ℓ = (ℓ_θ(y^hw) − ℓ_θ(y^hl) − g_I(y^hw, y^hl)/τ)², g_I = 1.5·I_safe(y^hw) − 0.5·I_safe(y^hl) − α.
``beta`` is τ. There is no constraint and no λ: the population optimum solves a label-defined
least-squares problem and is *not* π* (the testbed derives it exactly).

With soft helpfulness labels p = P(y1 more helpful) both orientations enter one batch with
weights w·p and w·(1−p), so the weighted mean is the exact expected loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from constrained_align.algorithms.families import LabelledConfig
from constrained_align.algorithms.pairs import logratios, train_labelled, unsafe_flags
from constrained_align.algorithms.registry import Paper, RunContext, RunResult, register
from constrained_align.config import NOT_ONE, param
from constrained_align.losses import bfpo_targets, ipo_squared_loss
from constrained_align.types import PairBatch


@dataclass
class BFPOConfig(LabelledConfig):
    """``bfpo`` settings (``beta`` is BFPO's τ)."""

    b1: float = param(3.0, "B_1 of the labelling function (B_3 = 1/(B_1 − 1))", check=NOT_ONE)
    alpha: float = param(0.5, "α, the shift of the labelling function")


def oriented_targets(pairs: PairBatch, config: BFPOConfig) -> tuple[Tensor, Tensor]:
    """Targets g_I/τ with response_1 as the more helpful one, and with response_0 as it."""
    h0, h1 = unsafe_flags(pairs)
    s0, s1 = 1.0 - h0, 1.0 - h1
    t1 = bfpo_targets(s1, s0, b1=config.b1, alpha=config.alpha) / config.beta
    t0 = bfpo_targets(s0, s1, b1=config.b1, alpha=config.alpha) / config.beta
    return t1, t0


@register(
    "bfpo",
    config=BFPOConfig,
    family="offline",
    paper=Paper(
        "Bi-Factorial Preference Optimization: Balancing Safety-Helpfulness in Language Models",
        "2408.15313",
    ),
    summary="IPO-style squared loss with a fixed safety-helpfulness labelling function",
    has_multiplier=False,
)
def train(config: BFPOConfig, ctx: RunContext) -> RunResult:
    """Squared loss on both orientations weighted by the helpfulness label."""

    def loss_fn(pairs: PairBatch) -> tuple[Tensor, dict[str, float]]:
        l0, l1 = logratios(ctx, pairs)
        t1, t0 = oriented_targets(pairs, config)
        p = pairs.better_id
        return ipo_squared_loss(
            torch.cat([l1, l0]),
            torch.cat([l0, l1]),
            target=torch.cat([t1, t0]),
            weight=torch.cat([pairs.weight * p, pairs.weight * (1 - p)]),
        )

    return train_labelled(ctx, loss_fn, config, stage="bfpo")
