"""``safe_dpo``: SafeDPO, the hard-constraint limit (Kim et al., arXiv 2505.20065), §3.10.

Problem: max E[r] − βKL s.t. c(x, y) ≤ 0 on the whole support. Its optimum is π_hard, the Gibbs
policy truncated to safe responses. The data transform (Prop. 4.3) keeps a helpfulness pair
when its winner is safe, swaps it when only the loser is safe and drops it when both are unsafe;
the loss adds a margin Δ ≥ 0 for safe-over-unsafe pairs (Eq. 12), which does not move the
optimum (Prop. 4.4) but drives unsafe log-ratios down faster. There is no λ.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from constrained_align.algorithms.families import LabelledConfig
from constrained_align.algorithms.pairs import logratios, train_labelled, unsafe_flags
from constrained_align.algorithms.registry import Paper, RunContext, RunResult, register
from constrained_align.config import NON_NEGATIVE, param
from constrained_align.losses import safe_dpo_loss
from constrained_align.types import PairBatch


@dataclass
class SafeDPOConfig(LabelledConfig):
    """``safe_dpo`` settings."""

    delta: float = param(
        10.0, "margin Δ ≥ 0 for safe-over-unsafe pairs (paper studies 0–20)", check=NON_NEGATIVE
    )


@register(
    "safe_dpo",
    config=SafeDPOConfig,
    family="offline",
    paper=Paper(
        "SafeDPO: A Simple Approach to Direct Preference Optimization with Enhanced Safety",
        "2505.20065",
    ),
    summary="hard constraint: keep/swap/drop helpfulness pairs by safety labels, margin Δ",
    has_multiplier=False,
)
def train(config: SafeDPOConfig, ctx: RunContext) -> RunResult:
    """DPO with SafeDPO's relabelling and margin."""

    def loss_fn(pairs: PairBatch) -> tuple[Tensor, dict[str, float]]:
        h0, h1 = unsafe_flags(pairs)
        l0, l1 = logratios(ctx, pairs)
        return safe_dpo_loss(
            l1,
            l0,
            chosen_unsafe=h1,
            rejected_unsafe=h0,
            beta=config.beta,
            delta=config.delta,
            label=pairs.better_id,
            weight=pairs.weight,
        )

    def kept_weight(pairs: PairBatch) -> Tensor:
        """The loss averages over the pairs it keeps (both responses unsafe: dropped)."""
        h0, h1 = unsafe_flags(pairs)
        return pairs.weight * (1 - h0 * h1)

    return train_labelled(ctx, loss_fn, config, stage="safe_dpo", weight_of=kept_weight)
