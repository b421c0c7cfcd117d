"""``c_dpo``: Constrained DPO (Liu, Sun, Zheng, arXiv 2403.02475), ALGORITHMS.md §3.5.

Outer loop over λ, inner loop a DPO run:

1. relabel every pair with r_λ = r − λc from the pretrained reward and cost models,
   P(y1 ≻ y0) = σ((r_λ(y1) − r_λ(y0))/T), and train DPO(β) on it (continuing from the current
   policy, whose target π_λ depends on λ only);
2. sample the trained policy, score the cost, and take the projected dual step
   λ ← [λ + η(Ê_π[c] − d)]_+ (``multiplier: projected``);
3. stop when |Ê c − d| < ``tol`` (or λ = 0 with a slack constraint), else repeat.

The dual gradient is only right at a converged inner DPO, so each round trains to (near)
convergence. λ may warm-start at the one-shot CAN solution on reference samples (§3.6).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from constrained_align.algorithms.common import (
    cost_range,
    draw_labels,
    lagrangian_label,
    make_primal_dual,
    observe_on_policy_cost,
    one_shot_lambda,
    pair_scores,
    train_dpo,
)
from constrained_align.algorithms.offline_config import OfflineConfig
from constrained_align.algorithms.registry import Paper, RunContext, RunResult, register
from constrained_align.config import DualConfig, param
from constrained_align.primal_dual import PrimalDual


@dataclass
class CDPOConfig(OfflineConfig):
    """``c_dpo`` settings."""

    rounds: int = param(20, "most outer rounds (each: relabel, full DPO run, dual step)")
    tol: float = param(1e-3, "stop when |Ê_π[c] − cost_limit| is below this")
    warm_start: bool = param(
        True, "start λ at the one-shot CAN solution on reference samples (else lambda_init)"
    )
    dual: DualConfig = param(
        DualConfig(multiplier="projected", lambda_init=0.0, cost_window=0),
        "the multiplier; projected gradient once per outer round",
    )


def relabel_round(
    ctx: RunContext, batches: list, lam: float, config: OfflineConfig, generator: torch.Generator
) -> list:
    """Pairs with ``extra['label']`` drawn from σ(Δr_λ / T) (soft or one Bernoulli draw)."""
    return [
        b.with_extra(
            label=draw_labels(
                lagrangian_label(b, lam, temperature=config.temperature),
                config.label_mode,
                generator,
            )
        )
        for b in batches
    ]


def initial_primal_dual(
    ctx: RunContext,
    config: CDPOConfig | OfflineConfig,
    batches: list,
    dual: DualConfig,
    warm_start: bool,
) -> tuple[PrimalDual, float | None]:
    """The PrimalDual, warm-started at the one-shot λ̂ when asked; also returns λ̂."""
    lam0 = None
    if warm_start:
        lam0 = one_shot_lambda(
            ctx, beta=config.beta, cost_limit=dual.cost_limit, max_value=dual.lambda_max
        )
    pd = ctx.watch(
        make_primal_dual(dual, beta=config.beta, cost_range=cost_range(batches), init=lam0)
    )
    return pd, lam0


@register(
    "c_dpo",
    config=CDPOConfig,
    family="offline",
    paper=Paper(
        "Enhancing LLM Safety via Constrained Direct Preference Optimization", "2403.02475"
    ),
    summary="relabel by r − λc, full DPO run, projected dual step on on-policy cost; repeat",
    has_multiplier=True,
)
def train(config: CDPOConfig, ctx: RunContext) -> RunResult:
    """Outer rounds of (relabel at λ → DPO → on-policy cost → dual step)."""
    batches = [pair_scores(ctx, b) for b in ctx.task.pair_batches(0)]
    pd, lam0 = initial_primal_dual(ctx, config, batches, config.dual, config.warm_start)
    generator = torch.Generator().manual_seed(ctx.seed)
    history: list[dict[str, float]] = []
    lam = pd.lam()
    for round_ in range(config.rounds):
        lam = pd.lam()
        labelled = relabel_round(ctx, batches, lam, config, generator)
        train_dpo(
            ctx,
            labelled,
            beta=config.beta,
            epochs=config.epochs,
            history=history,
            stage=f"round {round_}",
            extra_metrics={"dual/lambda": lam},
        )
        cost = observe_on_policy_cost(ctx, pd, round_)
        violation = cost - config.dual.cost_limit
        history[-1].update({"constraint/cost_estimate": cost, "constraint/violation": violation})
        if abs(violation) < config.tol or (lam == 0.0 and violation <= 0):
            break
        pd.step(round_)
    return RunResult(
        lam=lam,
        history=history,
        primal_dual=pd,
        extras={"lambda_warm_start": lam0, "rounds": round_ + 1},
    )
