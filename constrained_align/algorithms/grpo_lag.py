"""``grpo_lag``: critic-free, group-relative PPO-Lagrangian (ours), ALGORITHMS.md §3.3.

For each prompt, G responses from π_old; group-relative advantages of the reward and of the
cost separately (mean baseline; dividing by the group std is an option that moves the fixed
point away from π*), combined as in PPO-Lag, A = (Â_r − λÂ_c)/(1+λ), on every token; clipped
surrogate plus β_KL·KL(π_θ‖π_ref) as a loss term. λ: the same ``log_sgd`` rule and raw-cost
window as ``ppo_lag``, updated once per generation batch before the policy steps.

β_KL = β/(1+λ) for ``kl_placement: reward`` (fixed point exactly π_λ) and β for ``both``
(the β(1+λ) point of Safe RLHF's code).

**Several constraints.** ``dual.constraints`` adds constraints E[c_i] ≤ d_i beside the main
cost, each with its own λ_i, estimator and cost (``scorers.constraints``: a score model or a
Python function over text). The advantage is (Â_r − Σ_i λ_i Â_i)/(1 + Σ_i λ_i) and β_KL =
β/(1 + Σ_i λ_i), whose fixed point is π ∝ π_ref · exp((r − Σ_i λ_i c_i)/β), the optimum of the
problem with every constraint at the multipliers λ (checked against the exact two-constraint
optimum on the testbed). The KL term is estimated with an unbiased gradient:
ρ_t·sg(Σ_{t'≥t} k_t'), whose expectation under π_old at ρ = 1 has gradient ∇KL(π‖π_ref). (The k3
estimator used as a loss has the gradient of KL(π_ref‖π) instead, a different fixed point.)
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from constrained_align.algorithms.families import (
    KLPlacement,
    OnlineConfig,
    safe_rlhf_dual,
)
from constrained_align.algorithms.registry import Paper, RunContext, RunResult, register
from constrained_align.algorithms.rollout import (
    ppo_update,
    ptx_batch,
    rollout,
    rollout_metrics,
    take_rows,
)
from constrained_align.config import ConfigError, DualConfig, param
from constrained_align.losses import (
    group_relative_advantages,
    kl_penalty_loss,
    lagrangian_advantages,
)
from constrained_align.primal_dual import make_primal_dual
from constrained_align.types import Samples


@dataclass
class GRPOLagConfig(OnlineConfig):
    """``grpo_lag`` settings (G = the task's samples per prompt)."""

    kl_placement: KLPlacement = param(
        "reward", "β_KL = β/(1+λ) (targets π*) or β (the fixed point of Safe RLHF's code)"
    )
    scale_by_std: bool = param(
        False, "divide group advantages by the group std (no closed-form target then)"
    )
    dual: DualConfig = param(
        safe_rlhf_dual(),
        "the multiplier; log-λ SGD per generation batch on a window of raw costs",
    )


def combined_advantages(reward: Tensor, costs: dict[str, Tensor], lams: dict[str, float]) -> Tensor:
    """(Â_r − Σ_i λ_i Â_i) / (1 + Σ_i λ_i) over the constraints i: Safe RLHF's normalised
    Lagrangian advantage (§3.1), with one term per constraint (one constraint: the usual
    (Â_r − λÂ_c)/(1 + λ))."""
    if len(costs) == 1:
        ((name, cost),) = costs.items()
        return lagrangian_advantages(reward, cost, lams[name])
    total = sum(lams[name] for name in costs)
    return (reward - sum(lams[name] * cost for name, cost in costs.items())) / (1.0 + total)


def kl_loss_term(samples: Samples, kl: Tensor, beta_kl: float):
    """β_KL·KL(π_θ‖π_ref) as a function of the current token log-probs of the rows ``rows``
    (None: every row), for ``ppo_update``."""
    kl_to_go = kl.flip(-1).cumsum(-1).flip(-1)  # (B, T) K_t = Σ_{t'≥t} k_t'
    old, mask, weight = samples.logprobs.token, samples.logprobs.mask, samples.weight

    def term(logprobs: Tensor, rows: Tensor | None) -> tuple[Tensor, dict[str, float]]:
        width = logprobs.shape[1]
        loss, metrics = kl_penalty_loss(
            logprobs,
            take_rows(old, rows, width),
            take_rows(kl_to_go, rows, width),
            take_rows(mask, rows, width),
            weight=take_rows(weight, rows),
        )
        return beta_kl * loss, metrics

    return term


@register(
    "grpo_lag",
    config=GRPOLagConfig,
    family="online",
    paper=Paper(
        "DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open Language "
        "Models (GRPO), combined with Safe RLHF's Lagrangian",
        "2402.03300",
    ),
    summary="group-relative reward and cost advantages, (Â_r − λÂ_c)/(1+λ), no critics",
    has_multiplier=True,
    multi_constraint=True,
    status="experimental",  # no reference implementation exists (ALGORITHMS.md §3.3)
)
def train(config: GRPOLagConfig, ctx: RunContext) -> RunResult:
    """Generate G per prompt → score → dual step → clipped updates with the KL term."""
    if config.beta <= 0:
        raise ConfigError("grpo_lag needs beta > 0: without the KL term π_λ is undefined")
    pd = ctx.watch(make_primal_dual(config.dual, beta=config.beta))
    further = list(config.dual.constraints)
    history: list[dict[str, float]] = []
    for step in range(config.steps):
        ro = rollout(ctx, step, further)
        s = ro.samples
        ro.observe_cost(pd)
        pd.step(step)
        lams = pd.lambdas

        def relative(scores: Tensor, s=s) -> Tensor:
            return group_relative_advantages(
                scores, s.group, scale_by_std=config.scale_by_std, weight=s.weight
            )

        costs = {"cost": ro.cost, **ro.further}
        adv = combined_advantages(
            relative(ro.reward), {k: relative(c) for k, c in costs.items()}, lams
        )
        lam = sum(lams.values())
        mask = s.logprobs.mask
        adv = adv.unsqueeze(-1) * mask
        beta_kl = config.beta / (1.0 + lam) if config.kl_placement == "reward" else config.beta
        kl_term = kl_loss_term(s, ro.kl, beta_kl)
        ptx = ptx_batch(ctx, config, step)
        metrics = ppo_update(ctx, ro, adv, {}, config, extra_loss=kl_term, ptx=ptx)
        record = {"step": step, **rollout_metrics(ro), **metrics, **pd.metrics()}
        history.append(record)
        ctx.log(record)
    return RunResult(lam=pd.lam(), history=history, primal_dual=pd)
