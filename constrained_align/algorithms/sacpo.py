"""``sacpo``: stepwise alignment (Wachi et al., arXiv 2404.11049), ALGORITHMS.md §3.9.

Theorem 1 (reverse KL): π*(y|x) ∝ π_r(y|x)·exp(λ* g(x,y)/β) with π_r the reward-aligned policy.
So: stage 1 is DPO(β) on helpfulness pairs from π_ref, giving π_r; stage 2 is DPO(β/λ) on
harmlessness pairs with π_r as the reference. λ never moves (``multiplier: fixed``); it is
either ``dual.lambda_init`` (the paper sweeps β/λ) or, with ``lambda_source: dual_solve``, the
one-shot CAN λ̂ on scored reference samples (our option, when reward and cost models exist).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from constrained_align.algorithms.duals import one_shot_lambda
from constrained_align.algorithms.families import OfflineConfig
from constrained_align.algorithms.pairs import rows_with, train_dpo
from constrained_align.algorithms.registry import Paper, RunContext, RunResult, register
from constrained_align.config import ConfigError, DualConfig, param
from constrained_align.primal_dual import make_primal_dual


@dataclass
class SACPOConfig(OfflineConfig):
    """``sacpo`` settings (``epochs`` applies to each stage)."""

    lambda_source: Literal["fixed", "dual_solve"] = param(
        "fixed", "λ from dual.lambda_init, or from the one-shot dual on scored reference samples"
    )
    dual: DualConfig = param(
        DualConfig(multiplier="fixed", lambda_init=1.0, cost_window=0),
        "the multiplier; fixed (stage 2 uses KL weight β/λ)",
    )


@register(
    "sacpo",
    config=SACPOConfig,
    family="offline",
    paper=Paper(
        "Stepwise Alignment for Constrained Language Model Policy Optimization", "2404.11049"
    ),
    summary="DPO(β) on helpfulness, then DPO(β/λ) on harmlessness with π_r as reference",
    has_multiplier=True,
)
def train(config: SACPOConfig, ctx: RunContext) -> RunResult:
    """Stage 1 (reward), reference swap, stage 2 (safety)."""
    init = None
    if config.lambda_source == "dual_solve":
        init = one_shot_lambda(
            ctx,
            beta=config.beta,
            cost_limit=config.dual.cost_limit,
            max_value=config.dual.lambda_max,
        )
    pd = ctx.watch(make_primal_dual(config.dual, beta=config.beta, init=init))
    lam = pd.lam()
    if lam <= 0:
        raise ConfigError("sacpo needs λ > 0: stage 2 uses the KL weight β/λ")
    history: list[dict[str, float]] = []
    helpful = [b.with_extra(label=b.better_id) for b in ctx.task.pair_batches(0)]
    harmless = [b.with_extra(label=b.safer_id) for b in ctx.task.pair_batches(0)]
    for name, batches in (("helpfulness", helpful), ("safety", harmless)):
        if not rows_with(batches, "label"):  # checked up front, not after stage 1
            raise ConfigError(f"sacpo needs pairs with a {name} order; the data has none")
    train_dpo(
        ctx,
        helpful,
        beta=config.beta,
        epochs=config.epochs,
        history=history,
        stage="stage 1 (reward)",
    )
    ctx.backend.set_reference_to_policy()
    train_dpo(
        ctx,
        harmless,
        beta=config.beta / lam,
        epochs=config.epochs,
        history=history,
        stage="stage 2 (safety)",
        extra_metrics={"dual/lambda": lam},
    )
    return RunResult(lam=lam, history=history, primal_dual=pd)
