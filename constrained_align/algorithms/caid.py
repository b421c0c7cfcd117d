"""``caid``: multi-shot CAN (Zhang, Li, Bastani, Hounie, Ding, Ribeiro, 2025), §3.8.

For t = 0..T−1: sample the current policy and take the projected dual step
λ ← [λ + η(Ê_{π_θt}[c] − d)]_+, then train a few DPO epochs (one in the paper) on pseudo-labels
σ(Δr_λ) drawn on the reference pairs. The same policy keeps training and the reference stays
π_ref. λ warm-starts at the one-shot CAN λ̂ (MoCAN stage 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from constrained_align.algorithms.duals import warm_started_primal_dual
from constrained_align.algorithms.families import OfflineConfig
from constrained_align.algorithms.pairs import pair_scores, relabel, train_dpo
from constrained_align.algorithms.registry import Paper, RunContext, RunResult, register
from constrained_align.config import AT_LEAST_1, DualConfig, param
from constrained_align.types import weighted_mean


@dataclass
class CAIDConfig(OfflineConfig):
    """``caid`` settings (``epochs`` = DPO epochs per iteration)."""

    iterations: int = param(4, "T, dual iterations (the paper uses 4)", check=AT_LEAST_1)
    warm_start: bool = param(True, "start λ at the one-shot CAN solution on reference samples")
    dual: DualConfig = param(
        DualConfig(multiplier="projected", lambda_init=0.0, cost_window=0),
        "the multiplier; projected gradient once per iteration on on-policy cost",
    )


@register(
    "caid",
    config=CAIDConfig,
    family="offline",
    paper=Paper("Alignment of LLMs with Constrained Learning", None),
    summary="dual step on on-policy cost, then DPO epochs on r − λc labels; repeat",
    has_multiplier=True,
)
def train(config: CAIDConfig, ctx: RunContext) -> RunResult:
    """T iterations of (on-policy cost → dual step → relabel → DPO epochs)."""
    batches = [pair_scores(ctx, b) for b in ctx.task.pair_batches(0)]
    pd, lam0 = warm_started_primal_dual(ctx, config.beta, batches, config.dual, config.warm_start)
    generator = torch.Generator().manual_seed(ctx.seed)
    history: list[dict[str, float]] = []
    for t in range(config.iterations):
        samples = ctx.backend.sample(ctx.task.prompts(t), ctx.task.samples_per_prompt)
        costs = ctx.scorer.cost(samples.sequences).detach()
        pd.observe("cost", costs, samples.weight)  # the on-policy cost of π_θt
        cost = float(weighted_mean(costs, samples.weight))
        if t > 0 or not config.warm_start:
            pd.step(t)
        lam = pd.lam()
        labelled = relabel(batches, lam, config, generator)
        train_dpo(
            ctx,
            labelled,
            beta=config.beta,
            epochs=config.epochs,
            history=history,
            stage=f"iteration {t}",
            extra_metrics={
                "dual/lambda": lam,
                "constraint/cost_estimate": cost,
                "constraint/violation": cost - config.dual.cost_limit,
            },
        )
    return RunResult(
        lam=pd.lam(), history=history, primal_dual=pd, extras={"lambda_warm_start": lam0}
    )
