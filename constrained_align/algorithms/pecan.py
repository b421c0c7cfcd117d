"""``pecan``: preference-based CAN (Huang et al., arXiv 2405.19544), ALGORITHMS.md §3.7.

No reward or cost model: two DPO models pre-aligned at β stand in for them. In the population
limit β·ℓ_r = r + const(x) and β·ℓ_g = g + const(x) = −c + const(x), with ℓ = log(π/π_ref).

1. pre-align π_r on helpfulness pairs and π_g on safety pairs (two forks of the policy);
2. on reference samples, implicit reward r̂ = β ℓ_r and implicit cost
   ĉ = −β(ℓ_g − Ê_ref ℓ_g) + ``reference_cost``: the cost relative to the reference, placed on
   the absolute scale by E_ref[c] so that ``cost_limit`` keeps its one meaning (this is CAN's
   margin form with b = E_ref[c] − d); solve the dual exactly;
3. pseudo-label the pairs with σ(s·(Δℓ_r + λΔℓ_g)) and run DPO(β) from π_ref.

The label scale ``s`` must be β (``label_scale: beta``): the released code uses s = 1
(``raw``), which is Bradley-Terry at temperature β and makes DPO(β) target
π_ref·e^{(r−λc)/β²} — an effective KL weight of β² (§5.3 gives the fixed point).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from constrained_align.algorithms.duals import exact_dual_step, importance_from_samples
from constrained_align.algorithms.families import CAN_PAPER, OfflineConfig
from constrained_align.algorithms.pairs import draw_labels, train_dpo
from constrained_align.algorithms.registry import RunContext, RunResult, register
from constrained_align.config import AT_LEAST_1, ConfigError, DualConfig, param
from constrained_align.primal_dual import make_primal_dual
from constrained_align.types import PolicyBackend, Sequences


@dataclass
class PeCANConfig(OfflineConfig):
    """``pecan`` settings."""

    pre_align_epochs: int = param(
        3, "DPO epochs of each pre-aligned model (π_r and π_g)", check=AT_LEAST_1
    )
    label_scale: Literal["beta", "raw"] = param(
        "beta", "pseudo-label logits β(Δℓ_r + λΔℓ_g) (correct) or Δℓ_r + λΔℓ_g (reference code)"
    )
    reference_cost: float | None = param(
        None, "E_{π_ref}[c]: places cost_limit on the implicit cost scale (required)"
    )
    dual: DualConfig = param(
        DualConfig(multiplier="exact", cost_window=0), "the multiplier; exact one-shot solve"
    )


def _logratio(model: PolicyBackend, ref: PolicyBackend, seqs: Sequences) -> torch.Tensor:
    with torch.no_grad():
        return model.logprobs(seqs).sequence - ref.logprobs(seqs, reference=True).sequence


def pre_align(
    ctx: RunContext, config: PeCANConfig, label: str, history: list[dict[str, float]]
) -> PolicyBackend:
    """A fork of the policy trained by DPO(β) on ``better_id`` or ``safer_id`` labels."""
    model = ctx.backend.fork()
    sub = RunContext(model, ctx.scorer, ctx.task, seed=ctx.seed, log=ctx.log, dist=ctx.dist)
    batches = [b.with_extra(label=getattr(b, label)) for b in ctx.task.pair_batches(0)]
    train_dpo(
        sub,
        batches,
        beta=config.beta,
        epochs=config.pre_align_epochs,
        history=history,
        stage=f"pre-align {label}",
    )
    return model


@register(
    "pecan",
    config=PeCANConfig,
    family="offline",
    paper=CAN_PAPER,
    summary="two pre-aligned DPO models as implicit reward/cost, one-shot dual, DPO",
    has_multiplier=True,
)
def train(config: PeCANConfig, ctx: RunContext) -> RunResult:
    """Pre-align, solve the dual on implicit scores, pseudo-label, DPO."""
    if config.reference_cost is None:
        raise ConfigError(
            "pecan needs train.reference_cost = E_{π_ref}[c] to read cost_limit on its implicit "
            "cost scale (CAN's margin is b = reference_cost − cost_limit)"
        )
    history: list[dict[str, float]] = []
    pi_r = pre_align(ctx, config, "better_id", history)
    pi_g = pre_align(ctx, config, "safer_id", history)
    backend, beta = ctx.backend, config.beta

    samples = backend.sample(ctx.task.prompts(0), ctx.task.reference_samples, reference=True)
    reward = beta * _logratio(pi_r, backend, samples.sequences)
    lg = _logratio(pi_g, backend, samples.sequences)
    groups = int(samples.group.max()) + 1
    w = samples.weight.reshape(groups, -1)
    lg_ref = ((lg.reshape(groups, -1) * w).sum(-1) / w.sum(-1)).repeat_interleave(w.shape[1])
    cost = -beta * (lg - lg_ref) + config.reference_cost
    estimate = importance_from_samples(samples, reward, cost, beta=beta)
    pd = ctx.watch(make_primal_dual(config.dual, beta=beta))
    lam = exact_dual_step(pd, estimate, cost_limit=config.dual.cost_limit)

    scale = beta if config.label_scale == "beta" else 1.0
    generator = torch.Generator().manual_seed(ctx.seed)
    batches = []
    for b in ctx.task.pair_batches(0):
        d_r = _logratio(pi_r, backend, b.response_1) - _logratio(pi_r, backend, b.response_0)
        d_g = _logratio(pi_g, backend, b.response_1) - _logratio(pi_g, backend, b.response_0)
        prob = torch.sigmoid(scale * (d_r + lam * d_g) / config.temperature)
        batches.append(b.with_extra(label=draw_labels(prob, config.label_mode, generator)))
    train_dpo(
        ctx,
        batches,
        beta=beta,
        epochs=config.epochs,
        history=history,
        stage="dpo",
        extra_metrics={"dual/lambda": lam},
    )
    return RunResult(lam=lam, history=history, primal_dual=pd)
