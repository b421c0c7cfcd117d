"""``ppo_shaping``: the fixed-ν reward-shaping baseline of Safe RLHF (arXiv 2310.12773), §3.2.

PPO on the shaped reward r_t = −βk_t + 1[t=T](R − νC) with one (reward) critic, no (1+λ)
division and no λ update: ``multiplier: fixed`` with ν = ``dual.lambda_init``. Its tabular fixed
point is π_ν ∝ π_ref·e^{(r−νc)/β}; with ν = λ* it is π*.
"""

from __future__ import annotations

from dataclasses import dataclass

from constrained_align.algorithms.families import (
    SAFE_RLHF,
    OnlineConfig,
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
from constrained_align.config import POSITIVE, DualConfig, param
from constrained_align.primal_dual import make_primal_dual


@dataclass
class PPOShapingConfig(OnlineConfig):
    """``ppo_shaping`` settings (β = 0.02 in Safe RLHF's script)."""

    beta: float = param(
        0.02, "KL weight β (Safe RLHF's reward-shaping script uses 0.02)", check=POSITIVE
    )
    dual: DualConfig = param(
        DualConfig(multiplier="fixed", lambda_init=1.0, cost_window=0),
        "ν = lambda_init, never updated (the paper sweeps 0.01 … 100)",
    )


@register(
    "ppo_shaping",
    config=PPOShapingConfig,
    family="online",
    paper=SAFE_RLHF,
    summary="PPO on the shaped reward R − νC with fixed ν (Safe RLHF's baseline)",
    has_multiplier=True,
)
def train(config: PPOShapingConfig, ctx: RunContext) -> RunResult:
    """Rollout → shaped reward → PPO epochs → log."""
    pd = ctx.watch(make_primal_dual(config.dual, beta=config.beta))
    ctx.backend.add_critic("reward")
    nu = pd.lam()
    history: list[dict[str, float]] = []
    for step in range(config.steps):
        ro = rollout(ctx, step)
        ro.observe_cost(pd)  # logged only: the rule is fixed
        pd.step(step)
        r_t, _ = token_signals(
            ro,
            beta=config.beta,
            placement="reward",
            clip=config.clip_range_score,
            end_reward=ro.reward - nu * ro.cost,
        )
        adv, ret, old = advantages(ctx, ro, "reward", r_t, config)
        ptx = ptx_batch(ctx, config, step)
        metrics = ppo_update(ctx, ro, adv, {"reward": (old, ret)}, config, ptx=ptx)
        record = {"step": step, **rollout_metrics(ro), **metrics, **pd.metrics()}
        history.append(record)
        ctx.log(record)
    return RunResult(lam=nu, history=history, primal_dual=pd)
