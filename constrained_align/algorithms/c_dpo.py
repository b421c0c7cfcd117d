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

from constrained_align.algorithms.duals import warm_started_primal_dual
from constrained_align.algorithms.families import OfflineConfig
from constrained_align.algorithms.pairs import pair_scores, relabel, train_dpo
from constrained_align.algorithms.registry import Paper, RunContext, RunResult, register
from constrained_align.config import AT_LEAST_1, NON_NEGATIVE, DualConfig, param
from constrained_align.types import weighted_mean


@dataclass
class CDPOConfig(OfflineConfig):
    """``c_dpo`` settings."""

    rounds: int = param(
        20, "most outer rounds (each: relabel, full DPO run, dual step)", check=AT_LEAST_1
    )
    tol: float = param(1e-3, "stop when |Ê_π[c] − cost_limit| is below this", check=NON_NEGATIVE)
    warm_start: bool = param(
        True, "start λ at the one-shot CAN solution on reference samples (else lambda_init)"
    )
    dual: DualConfig = param(
        DualConfig(multiplier="projected", lambda_init=0.0, cost_window=0),
        "the multiplier; projected gradient once per outer round",
    )


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
    pd, lam0 = warm_started_primal_dual(ctx, config.beta, batches, config.dual, config.warm_start)
    generator = torch.Generator().manual_seed(ctx.seed)
    history: list[dict[str, float]] = []
    lam = pd.lam()
    for round_ in range(config.rounds):
        lam = pd.lam()

        def on_policy_cost(round_: int = round_) -> dict[str, float]:
            """Sample the trained policy, score the cost, feed the multiplier's estimator."""
            samples = ctx.backend.sample(ctx.task.prompts(round_), ctx.task.samples_per_prompt)
            cost = ctx.scorer.cost(samples.sequences).detach()
            pd.observe("cost", cost, samples.weight)
            estimate = float(weighted_mean(cost, samples.weight))
            violation = estimate - config.dual.cost_limit
            return {"constraint/cost_estimate": estimate, "constraint/violation": violation}

        record = train_dpo(
            ctx,
            relabel(batches, lam, config, generator),
            beta=config.beta,
            epochs=config.epochs,
            history=history,
            stage=f"round {round_}",
            extra_metrics={"dual/lambda": lam},
            finish=on_policy_cost,
        )
        violation = record["constraint/violation"]
        if abs(violation) < config.tol or (lam == 0.0 and violation <= 0):
            break
        pd.step(round_)
    return RunResult(
        lam=lam,
        history=history,
        primal_dual=pd,
        extras={"lambda_warm_start": lam0, "rounds": round_ + 1},
    )
