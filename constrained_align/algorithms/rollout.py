"""Steps shared by the online keys: rollout, per-token signals, critics and the PPO update.

Each step is a named function so that the loop of every online key reads rollout → score →
dual step → primal epochs → log, and so that the causal-LM loop reuses them unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from constrained_align.algorithms.families import KLPlacement, OnlineConfig
from constrained_align.algorithms.registry import RunContext
from constrained_align.config import ConfigError
from constrained_align.losses import clipped_value_loss, gae, ppo_clip_loss
from constrained_align.primal_dual import PrimalDual
from constrained_align.types import Samples, Sequences, weighted_mean
from constrained_align.utils.distributed import Reductions


@dataclass
class Rollout:
    """One step's on-policy samples with their end scores.

    ``samples``, ``reward`` and ``cost`` are this process's shard (what its losses use); the
    ``pooled_*`` tensors hold every process's rows (what the multiplier and the logs use), and
    are the same tensors in a single process.
    """

    samples: Samples
    reward: Tensor  # (B,)
    cost: Tensor  # (B,)
    pooled_reward: Tensor | None = None
    pooled_cost: Tensor | None = None
    pooled_weight: Tensor | None = None
    pooled_kl: Tensor | None = None  # sequence KL log π_old − log π_ref
    further: dict[str, Tensor] = field(default_factory=dict)  # further constraints' costs
    pooled_further: dict[str, Tensor] = field(default_factory=dict)

    @property
    def kl(self) -> Tensor:
        """``(B, T)`` per-token log-ratio k_t = log π_old − log π_ref (0 off the mask)."""
        s = self.samples
        return (s.logprobs.token - s.ref_logprobs.token) * s.logprobs.mask

    def pool(self, dist: Reductions) -> Rollout:
        """Gather every process's rewards, costs, weights and sequence KL."""
        self.pooled_reward = dist.gather(self.reward)
        self.pooled_cost = dist.gather(self.cost)
        self.pooled_weight = dist.gather(self.samples.weight)
        self.pooled_kl = dist.gather(self.kl.sum(-1))
        self.pooled_further = {name: dist.gather(c) for name, c in self.further.items()}
        return self

    def observe_cost(self, primal_dual: PrimalDual) -> None:
        """Feed the whole batch's costs (every process's) to the multipliers' estimators:
        ``cost``, and each further constraint's."""
        primal_dual.observe("cost", self.pooled_cost, self.pooled_weight)
        for name, costs in self.pooled_further.items():
            primal_dual.observe(name, costs, self.pooled_weight)


def rollout(ctx: RunContext, step: int, constraints: Sequence[str] = ()) -> Rollout:
    """Sample the policy on the step's prompts (each process draws its share, and every
    process gets every response), keep this process's share of the prompts' responses, score
    them and have the sampling policy's and the reference's token log-probs (backends that do
    not return them with the samples, like the causal LM, compute them here); then pool the
    scores over processes. ``constraints`` names further constraints whose costs are scored
    too."""
    batch = ctx.task.prompts(step)
    samples = ctx.backend.sample(batch, ctx.task.samples_per_prompt)
    if ctx.dist.world_size > 1:
        samples = local_samples(samples, ctx.dist.shard(range(len(batch))))
    seqs = samples.sequences
    with torch.no_grad():
        if samples.logprobs is None:
            samples.logprobs = ctx.backend.logprobs(seqs)
        if samples.ref_logprobs is None:
            samples.ref_logprobs = ctx.backend.logprobs(seqs, reference=True)
    ro = Rollout(samples, ctx.scorer.reward(seqs).detach(), ctx.scorer.cost(seqs).detach())
    ro.further = {name: ctx.scorer.constraint(name, seqs).detach() for name in constraints}
    return ro.pool(ctx.dist)


def take_rows(t: Tensor, rows: Tensor | None, width: int | None = None) -> Tensor:
    """The rows ``rows`` of ``t`` (None: all of it), a micro-batch of a step's tensors; with
    ``width``, a ``(B, T)`` tensor's first ``width`` columns (a micro-batch's responses may
    all be shorter than the batch's longest: the columns past them are masked out)."""
    t = t if rows is None else t[rows]
    return t if width is None else t[:, :width]


def local_samples(samples: Samples, prompts: list[int]) -> Samples:
    """The responses of the contiguous block of ``prompts``, their groups numbered from 0."""
    rows = (samples.group >= prompts[0]) & (samples.group <= prompts[-1])
    index = rows.nonzero(as_tuple=True)[0]
    return Samples(
        sequences=samples.sequences.index(index),
        group=samples.group[index] - prompts[0],
        weight=samples.weight[index],
    )


def end_token(mask: Tensor, values: Tensor) -> Tensor:
    """``(B, T)`` tensor holding ``values`` at each row's last response token, 0 elsewhere."""
    last = (mask.sum(-1).long() - 1).clamp_min(0)
    out = torch.zeros_like(mask, dtype=values.dtype)
    out[torch.arange(mask.shape[0]), last] = values
    return out


def token_signals(
    ro: Rollout,
    *,
    beta: float,
    placement: KLPlacement,
    clip: float,
    end_reward: Tensor,
    end_cost: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Per-token reward and cost streams of Safe RLHF (§3.1), clamped to ±``clip``.

    r_t = −β k_t + 1[t=T]·R and, with a cost critic, c_t = (+β k_t if ``both``) + 1[t=T]·C.
    """
    mask = ro.samples.logprobs.mask
    kl = ro.kl
    rewards = (-beta * kl + end_token(mask, end_reward)).clamp(-clip, clip) * mask
    if end_cost is None:
        return rewards, None
    costs = end_token(mask, end_cost) + (beta * kl if placement == "both" else 0.0)
    return rewards, costs.clamp(-clip, clip) * mask


def advantages(
    ctx: RunContext, ro: Rollout, head: str, signal: Tensor, config: OnlineConfig
) -> tuple[Tensor, Tensor, Tensor]:
    """GAE of one stream with its critic: (advantages, returns, old values), all (B, T)."""
    mask = ro.samples.logprobs.mask
    with torch.no_grad():
        old_values = ctx.backend.values(ro.samples.sequences, head) * mask
    adv, returns = gae(signal, old_values, mask, gamma=config.gamma, lam=config.gae_lambda)
    return adv, returns, old_values


def ptx_batch(ctx: RunContext, config: OnlineConfig, step: int) -> Sequences | None:
    """This step's supervised sequences for the PTX term, or None when ``ptx_coeff`` is 0."""
    if config.ptx_coeff == 0:
        return None
    source = getattr(ctx.task, "ptx_batch", None)
    if source is None:
        raise ConfigError(
            f"ptx_coeff = {config.ptx_coeff} needs a task with supervised responses "
            "(language-model runs take the preferred responses of their pairs)"
        )
    return source(step)


def ptx_loss(ctx: RunContext, sequences: Sequences) -> Tensor:
    """Mean token negative log-likelihood of ``sequences`` under the policy."""
    lp = ctx.backend.logprobs(sequences)
    return -(lp.token * lp.mask).sum() / lp.mask.sum()


def ppo_update(
    ctx: RunContext,
    ro: Rollout,
    adv: Tensor,
    critics: dict[str, tuple[Tensor, Tensor]],
    config: OnlineConfig,
    extra_loss=None,
    ptx: Sequences | None = None,
) -> dict[str, float]:
    """``update_iters`` steps of clipped surrogate + clipped value losses (+ ``extra_loss``,
    + ``ptx_coeff`` × the PTX NLL).

    Args:
        adv: ``(B, T)`` actor advantages (already combined and detached).
        critics: head → (old values, returns) for each critic trained alongside.
        extra_loss: optional ``f(logprobs, rows) -> (loss, metrics)`` added to the actor loss
            (GRPO's KL term).
        ptx: supervised sequences of the PTX term (:func:`ptx_batch`), or None. Safe RLHF
            takes a separate optimizer step on it; here it joins the same step's loss.
    """
    s = ro.samples
    metrics: dict[str, float] = {}
    for _ in range(config.update_iters):
        holder: dict[str, float] = {}

        def closure(rows: Tensor | None, holder: dict[str, float] = holder) -> Tensor:
            seqs = s.sequences if rows is None else s.sequences.index(rows)
            lp = ctx.backend.logprobs(seqs)
            width = lp.token.shape[1]
            loss, m = ppo_clip_loss(
                lp.token,
                take_rows(s.logprobs.token, rows, width),
                take_rows(adv, rows, width),
                lp.mask,
                clip_range=config.clip_range_ratio,
                weight=take_rows(s.weight, rows),
            )
            holder.update(m)
            if extra_loss is not None:
                kl_loss, m = extra_loss(lp.token, rows)
                loss = loss + kl_loss
                holder.update(m)
            if ptx is not None:  # the whole PTX batch in every micro-batch: its shares sum to 1
                nll = ptx_loss(ctx, ptx)
                loss = loss + config.ptx_coeff * nll
                holder["loss/ptx"] = float(nll.detach())
            for head, (old_values, returns) in critics.items():
                values = ctx.backend.values(seqs, head)
                v_loss, m = clipped_value_loss(
                    values,
                    take_rows(old_values, rows, width),
                    take_rows(returns, rows, width),
                    lp.mask,
                    clip_range=config.clip_range_value,
                    weight=take_rows(s.weight, rows),
                )
                loss = loss + v_loss
                holder.update({f"loss/value_{head}": m["loss/value"]})
            return loss

        ctx.backend.step(closure, s.weight)
        metrics = holder
    return ctx.dist.mean(metrics)


def rollout_metrics(ro: Rollout) -> dict[str, float]:
    """Mean reward, cost, unsafe fraction and KL of the whole (pooled) rollout, and its size
    (weighted means: exact in population)."""
    w = ro.pooled_weight
    return {
        "rollout/reward": float(weighted_mean(ro.pooled_reward, w)),
        "rollout/cost": float(weighted_mean(ro.pooled_cost, w)),
        "rollout/unsafe_fraction": float(weighted_mean((ro.pooled_cost > 0).to(w.dtype), w)),
        "rollout/kl": float(weighted_mean(ro.pooled_kl, w)),
        "rollout/samples": float(len(w)),
        **{
            f"rollout/cost/{name}": float(weighted_mean(costs, w))
            for name, costs in ro.pooled_further.items()
        },
    }
