"""Policy-gradient losses and advantage helpers (PPO-Lagrangian, GRPO-Lagrangian).

Token tensors are ``(B, T)`` with a ``mask`` ``(B, T)`` that is 1 on response tokens. The
"masked mean" is the token mean within each sequence (zero-length rows give 0), then the
weighted mean over the batch, ``sum(w · x_b) / sum(w)`` (ALGORITHMS.md §3.1).

Losses return ``(loss, metrics)``; the advantage helpers (:func:`gae`,
:func:`group_relative_advantages`, :func:`lagrangian_advantages`) return tensors.
"""

from __future__ import annotations

import torch
from torch import Tensor

from constrained_align.losses._reduce import as_float, masked_mean


def ppo_clip_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_range: float = 0.2,
    weight: Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """PPO clipped surrogate loss.

    PPO, arXiv 1707.06347, Eq. 7; masked as in Safe RLHF (ALGORITHMS.md §3.1)::

        ρ_t = exp(log π_θ(y_t | s_t) − log π_old(y_t | s_t))
        L   = −masked_mean( min(ρ_t A_t, clip(ρ_t, 1 − ε, 1 + ε) A_t) )

    ``old_logprobs`` and ``advantages`` are treated as constants (detached).

    Args:
        logprobs: ``(B, T)`` per-token log-probs under the current policy (with grad).
        old_logprobs: ``(B, T)`` per-token log-probs under the sampling policy.
        advantages: ``(B, T)`` per-token advantages A_t.
        mask: ``(B, T)`` 1 on response tokens.
        clip_range: ε.
        weight: ``(B,)`` non-negative per-sequence weights, or None for the uniform mean.

    Returns:
        ``(loss, metrics)`` with masked means ``loss/policy`` (the loss),
        ``policy/clipfrac`` (tokens where the clipped term is strictly the smaller, i.e.
        |ρ − 1| > ε on the side that clipping binds), ``policy/approx_kl`` (0.5 (log ρ)²)
        and ``policy/ratio_mean`` (ρ).
    """
    advantages = advantages.detach()
    log_ratio = logprobs - old_logprobs.detach()  # (B, T)
    ratio = log_ratio.exp()  # (B, T)
    unclipped = ratio * advantages  # (B, T)
    clipped = ratio.clamp(1.0 - clip_range, 1.0 + clip_range) * advantages  # (B, T)
    loss = -masked_mean(torch.minimum(unclipped, clipped), mask, weight)

    with torch.no_grad():
        clip_active = (clipped < unclipped).to(ratio.dtype)  # (B, T)
        metrics = {
            "loss/policy": as_float(loss),
            "policy/clipfrac": as_float(masked_mean(clip_active, mask, weight)),
            "policy/approx_kl": as_float(masked_mean(0.5 * log_ratio.square(), mask, weight)),
            "policy/ratio_mean": as_float(masked_mean(ratio, mask, weight)),
        }
    return loss, metrics


def clipped_value_loss(
    values: Tensor,
    old_values: Tensor,
    returns: Tensor,
    mask: Tensor,
    *,
    clip_range: float = 5.0,
    weight: Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Clipped critic loss of PPO as used by Safe RLHF (ALGORITHMS.md §3.1)::

        V_clip = clip(V, V_old − c, V_old + c)
        L      = ½ · masked_mean( max((V − G)², (V_clip − G)²) )

    ``old_values`` and ``returns`` are treated as constants (detached).

    Args:
        values: ``(B, T)`` critic values V under the current parameters (with grad).
        old_values: ``(B, T)`` values V_old at rollout time.
        returns: ``(B, T)`` targets G (e.g. from :func:`gae`).
        mask: ``(B, T)`` 1 on response tokens.
        clip_range: c (Safe RLHF ``clip_range_value`` = 5).
        weight: ``(B,)`` non-negative per-sequence weights, or None for the uniform mean.

    Returns:
        ``(loss, metrics)`` with ``loss/value`` (the loss) and ``value/clipfrac`` (masked
        fraction of tokens where the clipped error is strictly the larger, so it is used).
    """
    old_values = old_values.detach()
    returns = returns.detach()
    clipped_values = old_values + (values - old_values).clamp(-clip_range, clip_range)
    error = (values - returns).square()  # (B, T)
    clipped_error = (clipped_values - returns).square()  # (B, T)
    loss = 0.5 * masked_mean(torch.maximum(error, clipped_error), mask, weight)

    with torch.no_grad():
        clip_active = (clipped_error > error).to(values.dtype)  # (B, T)
        metrics = {
            "loss/value": as_float(loss),
            "value/clipfrac": as_float(masked_mean(clip_active, mask, weight)),
        }
    return loss, metrics


@torch.no_grad()
def gae(
    rewards: Tensor,
    values: Tensor,
    mask: Tensor,
    *,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[Tensor, Tensor]:
    """Generalized advantage estimation on right-padded token streams (no grad).

    GAE, arXiv 1506.02438, Eq. 16; γ = 1 and λ = 0.95 in Safe RLHF (ALGORITHMS.md §3.1)::

        δ_t = r_t + γ V_{t+1} − V_t          (V beyond the last response token is 0)
        A_t = Σ_{l≥0} (γλ)^l δ_{t+l}  = δ_t + γλ A_{t+1}
        G_t = A_t + V_t

    The mask must be 1 on a prefix of each row (right padding); rows may have different
    lengths. Positions with mask 0 get A = 0 and G = 0, and their rewards and values are
    ignored.

    Args:
        rewards: ``(B, T)`` per-token rewards r_t.
        values: ``(B, T)`` critic values V_t at rollout time.
        mask: ``(B, T)`` 1 on response tokens (a prefix of each row).
        gamma: discount γ.
        lam: GAE λ (not the Lagrange multiplier).

    Returns:
        ``(advantages, returns)``, both ``(B, T)`` and detached.
    """
    m = mask.to(values.dtype)
    r = rewards.to(values.dtype) * m
    v = values.detach() * m
    num_tokens = v.shape[-1]
    advantages = torch.zeros_like(v)
    next_value = torch.zeros_like(v[:, 0])  # (B,) V_{t+1}, 0 past the end
    next_advantage = torch.zeros_like(v[:, 0])  # (B,) A_{t+1}
    for t in reversed(range(num_tokens)):
        delta = r[:, t] + gamma * next_value - v[:, t]
        next_advantage = (delta + gamma * lam * next_advantage) * m[:, t]
        advantages[:, t] = next_advantage
        next_value = v[:, t]
    returns = (advantages + v) * m
    return advantages, returns


def group_relative_advantages(
    scores: Tensor,
    groups: Tensor,
    *,
    scale_by_std: bool = False,
    eps: float = 1e-6,
    weight: Tensor | None = None,
) -> Tensor:
    """Group-relative advantages: each score minus its group's (weighted) mean.

    GRPO, arXiv 2402.03300, §4.1.2 (outcome supervision); used per stream by ``grpo_lag``
    (ALGORITHMS.md §3.3)::

        μ_g = Σ_{i∈g} w_i s_i / Σ_{i∈g} w_i
        A_i = s_i − μ_{g(i)}                       (scale_by_std=False, the default)
        A_i = (s_i − μ_{g(i)}) / (σ_{g(i)} + eps)  (scale_by_std=True)

    where σ_g² = Σ_{i∈g} w_i (s_i − μ_g)² / Σ_{i∈g} w_i is the (weighted) population variance.
    Uniform weights when ``weight`` is None. In population mode a group is every response to
    one prompt, weighted by its probability, so μ_g is an exact expectation.

    The result is differentiable in ``scores``; detach it before using it as a constant.

    Args:
        scores: ``(B,)`` per-response scores (reward or cost).
        groups: ``(B,)`` long group ids (any values, any order).
        scale_by_std: divide by the group standard deviation (+ eps).
        eps: added to the standard deviation.
        weight: ``(B,)`` non-negative weights, or None.

    Returns:
        ``(B,)`` advantages.
    """
    _, index = torch.unique(groups, return_inverse=True)  # (B,) dense group index
    num_groups = int(index.max()) + 1 if index.numel() > 0 else 0
    w = torch.ones_like(scores) if weight is None else weight.to(scores.dtype)
    zeros = scores.new_zeros(num_groups)
    total = zeros.index_add(0, index, w)  # (G,)
    mean = zeros.index_add(0, index, w * scores) / total  # (G,)
    centred = scores - mean[index]  # (B,)
    if not scale_by_std:
        return centred
    var = zeros.index_add(0, index, w * centred.square()) / total  # (G,)
    return centred / (var.sqrt()[index] + eps)


def lagrangian_advantages(reward_adv: Tensor, cost_adv: Tensor, lam: float | Tensor) -> Tensor:
    """Safe RLHF actor advantage, normalised by 1 + λ.

    Safe RLHF, arXiv 2310.12773 (reference ``safe_rlhf/algorithms/ppo_lag/trainer.py``;
    ALGORITHMS.md §3.1)::

        A = (A_r − λ A_c) / (1 + λ)

    Args:
        reward_adv: advantages A_r of the reward stream, any shape (e.g. ``(B, T)`` or ``(B,)``).
        cost_adv: advantages A_c of the cost stream, same shape.
        lam: λ ≥ 0, a float or a tensor broadcastable to the advantages (used as a constant).

    Returns:
        The combined advantages, the broadcast shape of the inputs.

    Raises:
        ValueError: if λ is negative.
    """
    if isinstance(lam, Tensor):
        lam = lam.detach()
        if bool((lam < 0).any()):
            raise ValueError(f"lagrangian_advantages: λ must be >= 0, got {lam}.")
    elif lam < 0:
        raise ValueError(f"lagrangian_advantages: λ must be >= 0, got {lam}.")
    return (reward_adv - lam * cost_adv) / (1.0 + lam)


def kl_penalty_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    kl_to_go: Tensor,
    mask: Tensor,
    *,
    weight: Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """KL(π_θ ‖ π_ref) as a loss term with an unbiased gradient on on-policy samples.

    loss = masked_mean(ρ_t · sg(K_t)), ρ_t = π_θ(y_t|s_t)/π_old(y_t|s_t), K_t = Σ_{t'≥t} k_t',
    k_t = log π_old(y_t|s_t) − log π_ref(y_t|s_t). At θ = θ_old, E_{y∼π_old}[Σ_t ∇log π_θ(y_t)·K_t]
    = ∇_θ KL(π_θ ‖ π_ref) (the score-function gradient of E_π[Σ_t k_t]), so a policy trained with
    r − β·KL lands on the Gibbs policy. The popular k3 estimator used directly as a loss has the
    gradient of KL(π_ref ‖ π_θ) instead, a different fixed point.

    Args:
        logprobs: ``(B, T)`` log π_θ (differentiable).
        old_logprobs: ``(B, T)`` log π_old of the sampled tokens.
        kl_to_go: ``(B, T)`` K_t (constants).
        mask: ``(B, T)`` response-token mask.
        weight: ``(B,)`` per-sequence weights.

    Returns:
        (loss, metrics) with ``loss/kl``, the value of the term.
    """
    ratio = torch.exp(logprobs - old_logprobs.detach())
    loss = masked_mean(ratio * kl_to_go.detach(), mask, weight)
    return loss, {"loss/kl": as_float(loss)}
