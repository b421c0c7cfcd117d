"""``mocan``: model-based CAN, one-shot dualisation (Huang et al., arXiv 2405.19544), §3.6.

Stage 1 solves the dual once on M reference samples per prompt scored by the reward and cost
models: λ̂ is the root of the plug-in gradient D̂'(λ) = d − Σ_x ρ_x Σ_j softmax_j((r−λc)/β)·c
(``multiplier: exact``). When every sample violates the limit the plug-in dual has no finite
minimiser, and the run stops with ``DualUnboundedError`` rather than returning λ_max silently.
Stage 2 relabels the pairs by r − λ̂c and runs DPO at the same β.

The plug-in estimate is biased low for small M (Jensen on log-mean-exp), so λ̂ < λ* and the
policy violates the constraint a little; §5.7 measures it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from constrained_align.algorithms.duals import exact_dual_step, reference_importance
from constrained_align.algorithms.families import CAN_PAPER, OfflineConfig
from constrained_align.algorithms.pairs import pair_scores, relabel, train_dpo
from constrained_align.algorithms.registry import RunContext, RunResult, register
from constrained_align.config import DualConfig, param
from constrained_align.primal_dual import make_primal_dual


@dataclass
class MoCANConfig(OfflineConfig):
    """``mocan`` settings."""

    dual: DualConfig = param(
        DualConfig(multiplier="exact", cost_window=0),
        "the multiplier; exact one-shot solve of the plug-in dual",
    )


@register(
    "mocan",
    config=MoCANConfig,
    family="offline",
    paper=CAN_PAPER,
    summary="one-shot dual on scored reference samples, then DPO on r − λ̂c labels",
    has_multiplier=True,
)
def train(config: MoCANConfig, ctx: RunContext) -> RunResult:
    """Solve λ̂ once, relabel, DPO."""
    pd = ctx.watch(make_primal_dual(config.dual, beta=config.beta))
    estimate = reference_importance(ctx, config.beta)
    exact_dual_step(pd, estimate, cost_limit=config.dual.cost_limit)
    lam = pd.lam()
    batches = [pair_scores(ctx, b) for b in ctx.task.pair_batches(0)]
    labelled = relabel(batches, lam, config, torch.Generator().manual_seed(ctx.seed))
    history: list[dict[str, float]] = []
    train_dpo(
        ctx,
        labelled,
        beta=config.beta,
        epochs=config.epochs,
        history=history,
        stage="dpo",
        extra_metrics={"dual/lambda": lam},
    )
    return RunResult(lam=lam, history=history, primal_dual=pd)
