"""``dpo``: the helpfulness-only baseline (Rafailov et al., arXiv 2305.18290).

Loss: −log σ(β ℓ_θ(y_w) − β ℓ_θ(y_l)), ℓ_θ = log π_θ − log π_ref, on helpfulness pairs
(``better_response_id``). Its population fixed point is π_0 ∝ π_ref·e^{r/β} (ALGORITHMS.md §3.4).
Options give the DPO(S) / DPO-HARMLESS baseline (safety pairs) and DPO-SAFEBETTER (pairs whose
winner is unsafe dropped).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from constrained_align.algorithms.families import OfflineConfig
from constrained_align.algorithms.pairs import train_dpo
from constrained_align.algorithms.registry import Paper, RunContext, RunResult, register
from constrained_align.config import param
from constrained_align.types import PairBatch


@dataclass
class DPOConfig(OfflineConfig):
    """``dpo`` settings."""

    preference: Literal["helpful", "harmless", "safe_better"] = param(
        "helpful",
        "pairs ordered by helpfulness, by safety (DPO-HARMLESS), or helpfulness with the pairs "
        "whose winner is unsafe dropped (DPO-SAFEBETTER)",
    )


def preference_view(pairs: PairBatch, preference: str) -> PairBatch:
    """The pairs with ``extra['label']`` = P(response_1 wins) under the chosen preference.

    For ``safe_better`` the dropped mass is removed exactly: a pair keeps weight
    w·(p·I_safe(y1) + (1−p)·I_safe(y0)) and label p·I_safe(y1) / (that), which equals dropping
    every sampled pair whose winner is unsafe when the labels are hard.
    """
    if preference == "helpful":
        return pairs.with_extra(label=pairs.better_id)
    if preference == "harmless":
        return pairs.with_extra(label=pairs.safer_id)
    p = pairs.better_id
    s0, s1 = torch.nan_to_num(pairs.safe_0, nan=1.0), torch.nan_to_num(pairs.safe_1, nan=1.0)
    kept = p * s1 + (1 - p) * s0
    label = torch.where(kept > 0, p * s1 / kept.clamp_min(1e-300), torch.zeros_like(p))
    view = pairs.with_extra(label=label)
    view.weight = pairs.weight * kept
    return view


@register(
    "dpo",
    config=DPOConfig,
    family="offline",
    paper=Paper("Direct Preference Optimization", "2305.18290"),
    summary="helpfulness-only DPO baseline (no constraint)",
    has_multiplier=False,
)
def train(config: DPOConfig, ctx: RunContext) -> RunResult:
    """DPO on the preference view for ``config.epochs`` epochs."""
    batches = [preference_view(b, config.preference) for b in ctx.task.pair_batches(0)]
    history: list[dict[str, float]] = []
    train_dpo(ctx, batches, beta=config.beta, epochs=config.epochs, history=history, stage="dpo")
    return RunResult(lam=None, history=history)
