"""Dual signals that come from samples rather than from the pairs' labels: the CAN one-shot
dual on scored reference samples (mocan, and the warm starts of c_dpo, caid and sacpo), and
the multiplier of the keys that warm-start there.

The plug-in estimate arranges M reference samples of each of K prompts as (K, M) grids of
reward and cost (:func:`importance_from_samples`); its dual is solved exactly by the ``exact``
rule (:func:`exact_dual_step`), and is unbounded when the limit is not above the mean over
prompts of the smallest sampled cost.
"""

from __future__ import annotations

import torch
from torch import Tensor

from constrained_align.algorithms.registry import RunContext
from constrained_align.config import DualConfig
from constrained_align.primal_dual import (
    Constraint,
    DualUnboundedError,
    Exact,
    ImportanceEstimate,
    PrimalDual,
    make_primal_dual,
)
from constrained_align.types import PairBatch, Samples


def reference_importance(ctx: RunContext, beta: float) -> ImportanceEstimate:
    """Score ``reference_samples`` responses per prompt from π_ref: the CAN plug-in estimate."""
    samples = ctx.backend.sample(ctx.task.prompts(0), ctx.task.reference_samples, reference=True)
    seqs = samples.sequences
    reward, cost = ctx.scorer.reward(seqs).detach(), ctx.scorer.cost(seqs).detach()
    return importance_from_samples(samples, reward, cost, beta=beta)


def importance_from_samples(
    samples: Samples, reward: Tensor, cost: Tensor, *, beta: float
) -> ImportanceEstimate:
    """Arrange prompt-major sample scores as (K, M) grids for the importance estimate."""
    groups = int(samples.group.max()) + 1
    shape = (groups, len(samples) // groups)
    weight = samples.weight.reshape(shape)
    # Rows of a prompt carry its weight ρ_x·(π_ref(y|x) or 1): split into ρ and per-sample weights.
    rho = weight.sum(-1)
    return ImportanceEstimate(
        reward.reshape(shape),
        cost.reshape(shape),
        beta=beta,
        weights=weight / rho.unsqueeze(-1),
        prompt_weights=rho,
    )


def exact_dual_step(pd: PrimalDual, estimate: ImportanceEstimate, *, cost_limit: float) -> float:
    """One ``exact`` multiplier update on the plug-in dual; returns λ̂.

    Raises:
        DualUnboundedError: when d ≤ Σ_x ρ_x min_j c_xj, i.e. every reference sample of some
            prompts violates the limit and the empirical dual has no finite minimiser.
    """
    bound = estimate.min_cost()
    if cost_limit <= bound:
        raise DualUnboundedError(
            f"the one-shot dual is unbounded: cost_limit {cost_limit:.6g} is not above "
            f"{bound:.6g}, the mean over prompts of the smallest sampled cost; no policy supported "
            "on these reference samples meets the limit. Draw more reference samples per prompt "
            "or raise cost_limit."
        )
    pd.step(0, {"cost": lambda lam: estimate(lam) - cost_limit})
    return pd.lam()


def one_shot_lambda(
    ctx: RunContext, *, beta: float, cost_limit: float, max_value: float | None = None
) -> float:
    """λ̂ of the CAN one-shot dual on reference samples (warm starts of c_dpo, caid, sacpo)."""
    pd = PrimalDual(
        {"cost": Constraint(rule=Exact(max_value=max_value), estimator=None, cost_limit=cost_limit)}
    )
    return exact_dual_step(pd, reference_importance(ctx, beta), cost_limit=cost_limit)


def cost_range(pairs: list[PairBatch]) -> float:
    """c_max − c_min over scored pairs (sizes the default dual step)."""
    costs = torch.cat([torch.cat([p.extra["cost_0"], p.extra["cost_1"]]) for p in pairs])
    return float(costs.max() - costs.min())


def warm_started_primal_dual(
    ctx: RunContext, beta: float, scored: list[PairBatch], dual: DualConfig, warm_start: bool
) -> tuple[PrimalDual, float | None]:
    """The run's multiplier (c_dpo, caid), started at the one-shot λ̂ when ``warm_start``, with
    the default step sized on the scored pairs' cost range; also returns λ̂ (or None)."""
    lam0 = None
    if warm_start:
        lam0 = one_shot_lambda(
            ctx, beta=beta, cost_limit=dual.cost_limit, max_value=dual.lambda_max
        )
    pd = make_primal_dual(dual, beta=beta, cost_range=cost_range(scored), init=lam0)
    return ctx.watch(pd), lam0
