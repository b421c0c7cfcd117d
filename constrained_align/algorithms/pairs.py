"""Preference pairs, the offline keys' data: scoring and labelling them, and training on them.

Every step talks to the backend and scorer interfaces only, so the code the testbed proves
exact is the code that trains a language model:

- labels: :func:`lagrangian_label` (σ of the r − λc margin, C-DPO/CAN/CAID),
  :func:`relabel`, :func:`fill_labels_from_scores`, :func:`rows_with`, :func:`unsafe_flags`;
- the loop: :func:`train_pairs` runs optimizer steps over pair batches and logs one complete
  record per epoch; :func:`train_dpo` is that loop with the DPO loss on ``extra["label"]``;
- :func:`logratios`: ℓ(y) = log π_θ − log π_ref of both responses, reference cached per batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from constrained_align.algorithms.families import LabelledConfig, OfflineConfig
from constrained_align.algorithms.registry import RunContext, RunResult
from constrained_align.config import ConfigError
from constrained_align.losses import dpo_loss, lagrangian_preference
from constrained_align.types import PairBatch, check_finite

LossFn = Callable[[PairBatch], tuple[Tensor, dict[str, float]]]
#: The weights a loss averages the pairs with (``PairBatch.weight`` unless it drops pairs).
RowWeight = Callable[[PairBatch], Tensor]
Metrics = dict[str, float]


# ---------------------------------------------------------------------------------- labels


def pair_scores(ctx: RunContext, pairs: PairBatch) -> PairBatch:
    """Pairs with reward and cost of both responses in ``extra`` (scored once, reused)."""
    if "reward_0" in pairs.extra:
        return pairs
    s = ctx.scorer
    scores = {
        "reward_0": s.reward(pairs.response_0).detach(),
        "reward_1": s.reward(pairs.response_1).detach(),
        "cost_0": s.cost(pairs.response_0).detach(),
        "cost_1": s.cost(pairs.response_1).detach(),
    }
    for name, values in scores.items():
        check_finite(values, f"a score model's {name.split('_')[0]} of a pair", "scoring")
    return pairs.with_extra(**scores)


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


def relabel(
    batches: list[PairBatch], lam: float, config: OfflineConfig, generator: torch.Generator
) -> list[PairBatch]:
    """Scored pairs with ``extra['label']`` drawn from σ(Δr_λ / T) (soft or one Bernoulli)."""
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


def labelled_pairs(ctx: RunContext, missing_labels: str) -> list[PairBatch]:
    """Pairs with a helpfulness label and both safety labels (filled from the score models
    with ``missing_labels: score``, else only the pairs the data labels fully)."""
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


def unsafe_flags(pairs: PairBatch) -> tuple[Tensor, Tensor]:
    """h = 1[unsafe] of both responses (SafeDPO and BFPO need every response labelled)."""
    if torch.isnan(pairs.safe_0).any() or torch.isnan(pairs.safe_1).any():
        raise ConfigError("this loss needs per-response safety labels on every pair")
    return 1.0 - pairs.safe_0, 1.0 - pairs.safe_1


# ---------------------------------------------------------------------------------- training


def logratios(ctx: RunContext, pairs: PairBatch) -> tuple[Tensor, Tensor]:
    """``(B,)`` sequence log-ratios ℓ(y) = log π_θ − log π_ref of both responses.

    Reference log-probs are computed once per pair batch and cached in ``extra``.
    """
    backend, r0, r1 = ctx.backend, pairs.response_0, pairs.response_1
    if "ref_logp_0" not in pairs.extra:
        ref_0, ref_1 = backend.pair_logprobs(r0, r1, reference=True)
        pairs.extra["ref_logp_0"], pairs.extra["ref_logp_1"] = ref_0.sequence, ref_1.sequence
    lp_0, lp_1 = backend.pair_logprobs(r0, r1)
    return lp_0.sequence - pairs.extra["ref_logp_0"], lp_1.sequence - pairs.extra["ref_logp_1"]


def pair_weight(pairs: PairBatch) -> Tensor:
    """The weights of the pairs as the losses average them."""
    return pairs.weight


def local_rows(
    ctx: RunContext, batch: PairBatch, weight_of: RowWeight = pair_weight
) -> tuple[PairBatch, Tensor]:
    """This process's block of a pair batch, and the weights its optimizer step counts the
    rows with (``weight_of``: those the loss averages with). A process whose block is empty
    (fewer pairs than processes) works on the batch's first pair at weight 0, so that it still
    takes part in the step's all-reduce."""
    if ctx.dist.world_size == 1:
        return batch, weight_of(batch)
    rows = torch.tensor(ctx.dist.shard(range(len(batch))), dtype=torch.long)
    if len(rows) == 0:
        return batch.select(torch.zeros(1, dtype=torch.long)), torch.zeros(1)
    part = batch.select(rows)
    return part, weight_of(part)


def train_pairs(
    ctx: RunContext,
    batches: list[PairBatch],
    loss_fn: LossFn,
    *,
    epochs: int,
    history: list[Metrics],
    stage: str,
    extra_metrics: Metrics | None = None,
    finish: Callable[[], Metrics] | None = None,
    weight_of: RowWeight = pair_weight,
) -> Metrics:
    """``epochs`` passes of optimizer steps over ``batches``, one record logged per epoch.

    Every process passes the same batches; each trains on its block of every batch
    (:func:`local_rows`), and the engine makes the step that of the whole batch: each block
    and micro-batch counts by its share of ``weight_of`` (the weights ``loss_fn`` averages
    the pairs with).

    Each record holds the epoch's last step's metrics and ``extra_metrics``; ``finish``, when
    given, runs after the last epoch's steps and adds its metrics (an on-policy estimate of
    the trained policy) to that epoch's record before it is logged. Returns the last record.
    """
    record: Metrics = {}
    mine = [local_rows(ctx, batch, weight_of) for batch in batches]
    for epoch in range(epochs):
        metrics: Metrics = {}
        for part, weight in mine:
            holder: Metrics = {}

            def closure(rows: Tensor | None, part: PairBatch = part, holder: Metrics = holder):
                loss, m = loss_fn(part if rows is None else part.select(rows))
                holder.update(m)
                return loss

            loss = ctx.backend.step(closure, weight)
            metrics = {**ctx.dist.mean(holder), "loss/policy": loss}
        record = {"step": len(history), "stage": stage, **metrics, **(extra_metrics or {})}
        if finish is not None and epoch == epochs - 1:
            record.update(finish())
        history.append(record)
        ctx.log(record)
    return record


def dpo_on_labels(ctx: RunContext, *, beta: float) -> LossFn:
    """DPO at ``beta`` where ``extra["label"]`` is P(response_1 ≻ response_0)."""

    def loss_fn(pairs: PairBatch) -> tuple[Tensor, Metrics]:
        l0, l1 = logratios(ctx, pairs)
        return dpo_loss(l1, l0, beta=beta, label=pairs.extra["label"], weight=pairs.weight)

    return loss_fn


def train_dpo(ctx: RunContext, batches: list[PairBatch], *, beta: float, **loop: Any) -> Metrics:
    """:func:`train_pairs` with the DPO(β) loss on each batch's ``extra["label"]``
    (``loop``: its ``epochs``, ``history``, ``stage``, ``extra_metrics``, ``finish``).

    Pairs without a label (NaN: the data does not order them on this axis) are left out.
    """
    batches = rows_with(batches, "label")
    if not batches:
        raise ConfigError(
            f"{loop['stage']}: none of the run's pairs is ordered on the axis this stage trains "
            "on (helpfulness: better_response_id; safety: safer_response_id); check the data "
            "with `constrained-align data check`"
        )
    return train_pairs(ctx, batches, dpo_on_labels(ctx, beta=beta), **loop)


def train_labelled(
    ctx: RunContext,
    loss_fn: LossFn,
    config: LabelledConfig,
    *,
    stage: str,
    weight_of: RowWeight = pair_weight,
) -> RunResult:
    """``config.epochs`` epochs of ``loss_fn`` on :func:`labelled_pairs` (no multiplier;
    ``weight_of``: the weights ``loss_fn`` averages the pairs with)."""
    history: list[Metrics] = []
    batches = labelled_pairs(ctx, config.missing_labels)
    train_pairs(
        ctx,
        batches,
        loss_fn,
        epochs=config.epochs,
        history=history,
        stage=stage,
        weight_of=weight_of,
    )
    return RunResult(lam=None, history=history)
