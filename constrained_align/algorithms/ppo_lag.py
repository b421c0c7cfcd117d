"""``ppo_lag``: Safe RLHF's PPO-Lagrangian (Dai et al., arXiv 2310.12773), ALGORITHMS.md §3.1.

Each step: roll out, score R and C, feed the raw end-of-sequence costs to the window estimator
and update λ (``log_sgd``: log λ ← log λ + η·λ·(Ĵ_C − d), clamped at λ_max, after the delay)
*before* the actor update; then GAE on the reward stream (reward critic) and on the cost
stream (cost critic), and clipped PPO on A = (A_r − λA_c)/(1+λ) with clipped value losses.

``kl_placement``: ``reward`` (default) puts −βk_t in the reward stream only, so the fixed point
is exactly π_λ and the run targets π*; ``both`` is Safe RLHF's code (+βk_t in the cost stream
too), whose fixed point is the constrained optimum for KL weight β(1+λ̄) (§5.3).
"""

from __future__ import annotations

from dataclasses import dataclass

from constrained_align.algorithms.families import (
    SAFE_RLHF,
    KLPlacement,
    OnlineConfig,
    safe_rlhf_dual,
)
from constrained_align.algorithms.registry import RunContext, RunResult, register
from constrained_align.algorithms.rollout import (
    advantages,
    ppo_update,
    ptx_batch,
    rollout,
    rollout_metrics,
    token_signals,
)
from constrained_align.config import DualConfig, param
from constrained_align.losses import lagrangian_advantages
from constrained_align.primal_dual import make_primal_dual


@dataclass
class PPOLagConfig(OnlineConfig):
    """``ppo_lag`` settings."""

    kl_placement: KLPlacement = param(
        "reward", "KL in the reward stream only (targets π*) or in both streams (Safe RLHF code)"
    )
    dual: DualConfig = param(
        safe_rlhf_dual(),
        "the multiplier; log-λ SGD per RL step on a window of raw costs",
    )


@register(
    "ppo_lag",
    config=PPOLagConfig,
    family="online",
    paper=SAFE_RLHF,
    summary="PPO on (A_r − λA_c)/(1+λ) with reward and cost critics; log-λ SGD per step",
    has_multiplier=True,
)
def train(config: PPOLagConfig, ctx: RunContext) -> RunResult:
    """Rollout → score → dual step → PPO epochs → log, ``config.steps`` times."""
    pd = ctx.watch(make_primal_dual(config.dual, beta=config.beta))
    ctx.backend.add_critic("reward")
    ctx.backend.add_critic("cost")
    history: list[dict[str, float]] = []
    for step in range(config.steps):
        ro = rollout(ctx, step)
        ro.observe_cost(pd)
        lam = pd.step(step)["cost"]
        r_t, c_t = token_signals(
            ro,
            beta=config.beta,
            placement=config.kl_placement,
            clip=config.clip_range_score,
            end_reward=ro.reward,
            end_cost=ro.cost,
        )
        adv_r, ret_r, old_r = advantages(ctx, ro, "reward", r_t, config)
        adv_c, ret_c, old_c = advantages(ctx, ro, "cost", c_t, config)
        adv = lagrangian_advantages(adv_r, adv_c, lam)
        critics = {"reward": (old_r, ret_r), "cost": (old_c, ret_c)}
        metrics = ppo_update(ctx, ro, adv, critics, config, ptx=ptx_batch(ctx, config, step))
        record = {"step": step, **rollout_metrics(ro), **metrics, **pd.metrics()}
        history.append(record)
        ctx.log(record)
    return RunResult(lam=pd.lam(), history=history, primal_dual=pd)
