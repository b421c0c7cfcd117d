"""``safe_dpo``: SafeDPO, the hard-constraint limit (Kim et al., arXiv 2505.20065), §3.10.

Problem: max E[r] − βKL s.t. c(x, y) ≤ 0 on the whole support. Its optimum is π_hard, the Gibbs
policy truncated to safe responses. The data transform (Prop. 4.3) keeps a helpfulness pair
when its winner is safe, swaps it when only the loser is safe and drops it when both are unsafe;
the loss adds a margin Δ ≥ 0 for safe-over-unsafe pairs (Eq. 12), which does not move the
optimum (Prop. 4.4) but drives unsafe log-ratios down faster. There is no λ.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from constrained_align.algorithms.common import (
    LossFn,
    fill_labels_from_scores,
    logratios,
    rows_with,
    train_pairs,
)
from constrained_align.algorithms.offline_config import OfflineConfig
from constrained_align.algorithms.registry import Paper, RunContext, RunResult, register
from constrained_align.config import ConfigError, param
from constrained_align.losses import safe_dpo_loss
from constrained_align.types import PairBatch


@dataclass
class SafeDPOConfig(OfflineConfig):
    """``safe_dpo`` settings."""

    delta: float = param(10.0, "margin Δ ≥ 0 for safe-over-unsafe pairs (paper studies 0–20)")
    missing_labels: Literal["score", "drop"] = param(
        "score",
        "pairs lacking a helpfulness or a safety label: fill it from the score models "
        "(P(better) = σ(r_1 − r_0), safe ⇔ c ≤ 0) or leave the pair out",
    )


def labelled_pairs(ctx: RunContext, missing_labels: str) -> list[PairBatch]:
    """Pairs with a helpfulness label and both safety labels (filled or filtered)."""
    batches = ctx.task.pair_batches(0)
    if missing_labels == "score":
        batches = fill_labels_from_scores(ctx, batches)
    batches = rows_with(batches, "better_id", "safe_0", "safe_1")
    if not batches:
        raise ConfigError(
            "no pair has a helpfulness label and safety labels on both responses; "
            "set missing_labels: score to fill them from the reward and cost models"
        )
    return batches


def train_labelled(ctx: RunContext, loss_fn: LossFn, config: Any, *, stage: str) -> RunResult:
    """``config.epochs`` epochs of ``loss_fn`` on :func:`labelled_pairs` (no multiplier)."""
    history: list[dict[str, float]] = []
    batches = labelled_pairs(ctx, config.missing_labels)
    train_pairs(ctx, batches, loss_fn, epochs=config.epochs, history=history, stage=stage)
    return RunResult(lam=None, history=history)


def unsafe_flags(pairs: PairBatch) -> tuple[Tensor, Tensor]:
    """h = 1[unsafe] of both responses; SafeDPO needs every response labelled."""
    if torch.isnan(pairs.safe_0).any() or torch.isnan(pairs.safe_1).any():
        raise ValueError("safe_dpo needs per-response safety labels on every pair")
    return 1.0 - pairs.safe_0, 1.0 - pairs.safe_1


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

    return train_labelled(ctx, loss_fn, config, stage="safe_dpo")
