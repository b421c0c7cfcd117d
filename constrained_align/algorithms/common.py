"""Steps shared by several algorithms: the dual, relabelling, the preference-training loop.

Everything here talks to the backend and scorer interfaces only, so the code the testbed proves
exact is the code that trains a language model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch
from torch import Tensor

from constrained_align.algorithms.registry import RunContext
from constrained_align.config import DualConfig
from constrained_align.losses import dpo_loss, lagrangian_preference
from constrained_align.primal_dual import (
    BatchMean,
    Constraint,
    DualUnboundedError,
    Exact,
    ImportanceEstimate,
    PrimalDual,
    WindowMean,
    build_multiplier,
)
from constrained_align.types import PairBatch, Samples, weighted_mean

LossFn = Callable[[PairBatch], tuple[Tensor, dict[str, float]]]


def safe_dual_lr(beta: float, cost_range: float) -> float:
    """η = 8β/(c_max − c_min)², below 2/L for the dual's smoothness L (ALGORITHMS.md §1.4)."""
    if cost_range <= 0:
        raise ValueError("cannot size the dual step: every observed cost is the same")
    return 8.0 * beta / cost_range**2


def make_primal_dual(
    dual: DualConfig, *, beta: float, cost_range: float | None = None, init: float | None = None
) -> PrimalDual:
    """The run's PrimalDual with one constraint, ``cost``, built from the config.

    Args:
        dual: the config section.
        beta: KL weight (for the default step size).
        cost_range: c_max − c_min of the scores seen, when ``lambda_lr`` is null.
        init: overrides ``lambda_init`` (warm starts from the one-shot dual).
    """
    lr = dual.lambda_lr
    if lr is None and dual.multiplier in ("projected", "log_sgd", "pid"):
        if cost_range is None:
            raise ValueError("lambda_lr is null (auto) but no cost range is known to size it")
        lr = safe_dual_lr(beta, cost_range)
    rule = build_multiplier(
        dual.multiplier,
        init=dual.lambda_init if init is None else init,
        lr=lr,
        max_value=dual.lambda_max,
        kp=dual.pid.kp,
        ki=dual.pid.ki,
        kd=dual.pid.kd,
        delay=dual.pid.delay,
        alpha_p=dual.pid.alpha_p,
        alpha_d=dual.pid.alpha_d,
    )
    estimator = WindowMean(dual.cost_window) if dual.cost_window > 0 else BatchMean()
    constraint = Constraint(
        rule=rule,
        estimator=estimator,
        cost_limit=dual.cost_limit,
        update_every=dual.dual_update_every,
        delay_steps=dual.dual_delay_steps,
    )
    return PrimalDual({"cost": constraint})


def score_samples(ctx: RunContext, samples: Samples) -> tuple[Tensor, Tensor]:
    """``(B,)`` reward and cost of sampled responses."""
    seqs = samples.sequences
    return ctx.scorer.reward(seqs).detach(), ctx.scorer.cost(seqs).detach()


def observe_on_policy_cost(ctx: RunContext, pd: PrimalDual, step: int) -> float:
    """Sample the current policy, score the cost, feed the estimator; returns the batch mean."""
    samples = ctx.backend.sample(ctx.task.prompts(step), ctx.task.samples_per_prompt)
    cost = ctx.scorer.cost(samples.sequences).detach()
    pd.observe("cost", cost, samples.weight)
    return float(weighted_mean(cost, samples.weight))


def reference_importance(ctx: RunContext, beta: float) -> ImportanceEstimate:
    """Score ``reference_samples`` responses per prompt from π_ref: the CAN plug-in estimate."""
    samples = ctx.backend.sample(ctx.task.prompts(0), ctx.task.reference_samples, reference=True)
    reward, cost = score_samples(ctx, samples)
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


def one_shot_lambda(
    ctx: RunContext, *, beta: float, cost_limit: float, max_value: float | None = None
) -> float:
    """λ̂ of the CAN one-shot dual on reference samples (warm starts of c_dpo and caid)."""
    pd = PrimalDual(
        {"cost": Constraint(rule=Exact(max_value=max_value), estimator=None, cost_limit=cost_limit)}
    )
    return exact_dual_step(pd, reference_importance(ctx, beta), cost_limit=cost_limit)


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


def pair_scores(ctx: RunContext, pairs: PairBatch) -> PairBatch:
    """Pairs with reward and cost of both responses in ``extra`` (scored once, reused)."""
    if "reward_0" in pairs.extra:
        return pairs
    s = ctx.scorer
    return pairs.with_extra(
        reward_0=s.reward(pairs.response_0).detach(),
        reward_1=s.reward(pairs.response_1).detach(),
        cost_0=s.cost(pairs.response_0).detach(),
        cost_1=s.cost(pairs.response_1).detach(),
    )


def cost_range(pairs: list[PairBatch]) -> float:
    """c_max − c_min over scored pairs (sizes the default dual step)."""
    costs = torch.cat([torch.cat([p.extra["cost_0"], p.extra["cost_1"]]) for p in pairs])
    return float(costs.max() - costs.min())


def lagrangian_label(pairs: PairBatch, lam: float, *, temperature: float = 1.0) -> Tensor:
    """P(response_1 ≻ response_0) = σ((r_λ(y1) − r_λ(y0))/T), r_λ = r − λc (C-DPO, CAN)."""
    e = pairs.extra
    return lagrangian_preference(
        e["reward_1"], e["cost_1"], e["reward_0"], e["cost_0"], lam=lam, temperature=temperature
    )


def draw_labels(prob: Tensor, mode: str, generator: torch.Generator) -> Tensor:
    """Soft labels as they are (``soft``), or one Bernoulli draw per pair (``sampled``)."""
    if mode == "soft":
        return prob
    return torch.bernoulli(prob, generator=generator).to(prob.dtype)


def logratios(ctx: RunContext, pairs: PairBatch) -> tuple[Tensor, Tensor]:
    """``(B,)`` sequence log-ratios ℓ(y) = log π_θ − log π_ref of both responses.

    Reference log-probs are computed once per pair batch and cached in ``extra``.
    """
    backend = ctx.backend
    if "ref_logp_0" not in pairs.extra:
        pairs.extra["ref_logp_0"] = backend.logprobs(pairs.response_0, reference=True).sequence
        pairs.extra["ref_logp_1"] = backend.logprobs(pairs.response_1, reference=True).sequence
    l0 = backend.logprobs(pairs.response_0).sequence - pairs.extra["ref_logp_0"]
    l1 = backend.logprobs(pairs.response_1).sequence - pairs.extra["ref_logp_1"]
    return l0, l1


def train_pairs(
    ctx: RunContext,
    batches: list[PairBatch],
    loss_fn: LossFn,
    *,
    epochs: int,
    history: list[dict[str, float]],
    stage: str,
    extra_metrics: dict[str, float] | None = None,
) -> dict[str, float]:
    """Run ``epochs`` passes of optimizer steps over ``batches``; log each epoch's last metrics."""
    metrics: dict[str, float] = {}
    for _ in range(epochs):
        for batch in batches:
            holder: dict[str, float] = {}

            def closure(batch: PairBatch = batch, holder: dict[str, float] = holder) -> Tensor:
                loss, m = loss_fn(batch)
                holder.update(m)
                return loss

            loss = ctx.backend.step(closure)
            metrics = {"loss/policy": loss, **holder}
        record = {"step": len(history), "stage": stage, **metrics, **(extra_metrics or {})}
        history.append(record)
        ctx.log(record)
    return metrics


def dpo_on_labels(ctx: RunContext, *, beta: float) -> LossFn:
    """DPO at ``beta`` where ``extra["label"]`` is P(response_1 ≻ response_0)."""

    def loss_fn(pairs: PairBatch) -> tuple[Tensor, dict[str, float]]:
        l0, l1 = logratios(ctx, pairs)
        return dpo_loss(l1, l0, beta=beta, label=pairs.extra["label"], weight=pairs.weight)

    return loss_fn


def rows_with(batches: list[PairBatch], *labels: str) -> list[PairBatch]:
    """The pairs whose named labels are all present (finite); empty batches are dropped.

    Labels are PairBatch fields (``better_id``, ``safer_id``, ``safe_0``, ``safe_1``) or
    ``extra`` keys. Real data often labels one axis only (HH-RLHF helpful-base has no safety
    order), so a stage that trains on an axis trains on the pairs labelled on it.
    """
    out = []
    for batch in batches:
        keep = torch.ones(len(batch), dtype=torch.bool)
        for name in labels:
            value = batch.extra[name] if name in batch.extra else getattr(batch, name)
            keep &= torch.isfinite(value)
        if bool(keep.all()):
            out.append(batch)
        elif bool(keep.any()):
            out.append(batch.select(keep))
    return out


def fill_labels_from_scores(ctx: RunContext, batches: list[PairBatch]) -> list[PairBatch]:
    """Missing labels from the score models: P(better) = σ(r_1 − r_0), safe ⇔ cost ≤ 0.

    Only the labels a pair lacks are filled; labels from data are kept as they are.
    """
    out = []
    for batch in batches:
        needs = ~(
            torch.isfinite(batch.better_id)
            & torch.isfinite(batch.safe_0)
            & torch.isfinite(batch.safe_1)
        )
        if not bool(needs.any()):
            out.append(batch)
            continue
        e = pair_scores(ctx, batch).extra
        guess_better = torch.sigmoid(e["reward_1"] - e["reward_0"]).to(batch.better_id.dtype)
        out.append(
            replace(
                batch,
                better_id=torch.where(batch.better_id.isnan(), guess_better, batch.better_id),
                safe_0=torch.where(batch.safe_0.isnan(), (e["cost_0"] <= 0).double(), batch.safe_0),
                safe_1=torch.where(batch.safe_1.isnan(), (e["cost_1"] <= 0).double(), batch.safe_1),
            )
        )
    return out


def train_dpo(
    ctx: RunContext,
    batches: list[PairBatch],
    *,
    beta: float,
    epochs: int,
    history: list[dict[str, float]],
    stage: str,
    extra_metrics: dict[str, float] | None = None,
) -> dict[str, float]:
    """:func:`train_pairs` with the DPO(β) loss on each batch's ``extra["label"]``.

    Pairs without a label (NaN: the data does not order them on this axis) are left out.
    """
    batches = rows_with(batches, "label")
    if not batches:
        raise ValueError(f"{stage}: no pair has a label on the axis this stage trains on")
    return train_pairs(
        ctx,
        batches,
        dpo_on_labels(ctx, beta=beta),
        epochs=epochs,
        history=history,
        stage=stage,
        extra_metrics=extra_metrics,
    )
