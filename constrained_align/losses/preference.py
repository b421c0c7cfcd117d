"""Preference (direct-alignment) losses on sequence log-ratios.

Every input log-ratio is ℓ(y) = log π_θ(y | x) − log π_ref(y | x), shape ``(B,)``, summed over
the response tokens. Losses return ``(loss, metrics)``; the label helpers (:func:`bfpo_targets`,
:func:`safe_dpo_relabel`) return tensors. Metric names follow TRL where TRL has one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from constrained_align.losses._reduce import as_float, fraction, weighted_mean


def _soft_logistic(z: Tensor, label: Tensor | None) -> Tensor:
    """Per-example ``-[p log σ(z) + (1-p) log σ(-z)]`` (``-log σ(z)`` when ``label`` is None).

    Uses ``-log σ(z) = softplus(-z)`` for stability. Shapes: ``z`` and ``label`` are ``(B,)``.
    """
    if label is None:
        return F.softplus(-z)
    p = label.to(z.dtype)
    return p * F.softplus(-z) + (1.0 - p) * F.softplus(z)


def lagrangian_preference(
    reward_1: Tensor,
    cost_1: Tensor,
    reward_0: Tensor,
    cost_0: Tensor,
    *,
    lam: float,
    temperature: float = 1.0,
) -> Tensor:
    """``(B,)`` P(y1 ≻ y0) = σ((r_λ(y1) − r_λ(y0))/T) with r_λ = r − λc (C-DPO, CAN; §3.5–3.6)."""
    return torch.sigmoid(((reward_1 - lam * cost_1) - (reward_0 - lam * cost_0)) / temperature)


def dpo_loss(
    chosen_logratio: Tensor,
    rejected_logratio: Tensor,
    *,
    beta: float,
    label: Tensor | None = None,
    weight: Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Direct Preference Optimization loss, with an optional soft preference label.

    DPO, arXiv 2305.18290, Eq. 7 (ALGORITHMS.md §3.4); the soft-label form is the
    cross-entropy against a preference probability p (as in TRL's label smoothing)::

        z = β (ℓ_c − ℓ_r)
        L = E_w[ −p log σ(z) − (1 − p) log σ(−z) ]

    With p = 1 (the default) this is standard DPO, ``−log σ(z)``. Its gradient with respect to
    ℓ_c is ``−β (1 − σ(z)) · w / sum(w)`` per row (p = 1).

    Args:
        chosen_logratio: ``(B,)`` ℓ(y_c), the "chosen" response's log-ratio.
        rejected_logratio: ``(B,)`` ℓ(y_r), the "rejected" response's log-ratio.
        beta: β > 0, the KL weight.
        label: ``(B,)`` p ∈ [0, 1], the probability that "chosen" is preferred; None means 1.
        weight: ``(B,)`` non-negative per-pair weights, or None for the uniform mean.

    Returns:
        ``(loss, metrics)`` with weighted-mean metrics ``rewards/chosen`` (β ℓ_c),
        ``rewards/rejected`` (β ℓ_r), ``rewards/margins`` (z) and ``rewards/accuracies``
        (weighted fraction with z > 0).
    """
    chosen_rewards = beta * chosen_logratio  # (B,)
    rejected_rewards = beta * rejected_logratio  # (B,)
    z = chosen_rewards - rejected_rewards  # (B,)
    loss = weighted_mean(_soft_logistic(z, label), weight)
    metrics = {
        "rewards/chosen": as_float(weighted_mean(chosen_rewards, weight)),
        "rewards/rejected": as_float(weighted_mean(rejected_rewards, weight)),
        "rewards/margins": as_float(weighted_mean(z, weight)),
        "rewards/accuracies": fraction(z > 0, weight),
    }
    return loss, metrics


def ipo_squared_loss(
    chosen_logratio: Tensor,
    rejected_logratio: Tensor,
    *,
    target: Tensor | float,
    weight: Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Squared (IPO / BFPO) regression of the log-ratio margin onto a target.

    IPO, arXiv 2310.12036 (its empirical squared loss), in the per-example form of BFPO,
    arXiv 2408.15313 (ALGORITHMS.md §3.11), where ``target = g_I / τ`` (see :func:`bfpo_targets`)::

        L = E_w[ (ℓ_c − ℓ_r − target)² ]

    Plain IPO is ``target = 1 / (2τ)``.

    Args:
        chosen_logratio: ``(B,)`` ℓ(y_c).
        rejected_logratio: ``(B,)`` ℓ(y_r).
        target: ``(B,)`` per-pair targets or one float for every pair.
        weight: ``(B,)`` non-negative per-pair weights, or None for the uniform mean.

    Returns:
        ``(loss, metrics)`` with ``rewards/chosen`` and ``rewards/rejected`` (weighted means of
        ℓ_c and ℓ_r: BFPO's τ scales the target, not the log-ratios), ``rewards/margins`` (of
        ℓ_c − ℓ_r) and ``loss/squared`` (the loss).
    """
    margin = chosen_logratio - rejected_logratio  # (B,)
    loss = weighted_mean((margin - target).square(), weight)
    metrics = {
        "rewards/chosen": as_float(weighted_mean(chosen_logratio, weight)),
        "rewards/rejected": as_float(weighted_mean(rejected_logratio, weight)),
        "rewards/margins": as_float(weighted_mean(margin, weight)),
        "loss/squared": as_float(loss),
    }
    return loss, metrics


def bfpo_targets(
    chosen_safe: Tensor,
    rejected_safe: Tensor,
    *,
    b1: float = 3.0,
    alpha: float = 0.5,
) -> Tensor:
    """BFPO label function g_I for pairs ordered by helpfulness.

    BFPO, arXiv 2408.15313, label function g_I (ALGORITHMS.md §3.11)::

        g_I(y^hw, y^hl) = B1 · B3 · I_safe(y^hw) − B3 · I_safe(y^hl) − α,   B3 = 1 / (B1 − 1)

    With the defaults (B1 = 3, α = 0.5): safe/unsafe → 1.0, safe/safe → 0.5,
    unsafe/unsafe → −0.5, unsafe/safe → −1.0 (first = the more helpful "chosen" response).
    The squared loss then uses ``target = g_I / τ``.

    Args:
        chosen_safe: ``(B,)`` 0/1 (bool or float) I_safe of the more helpful response.
        rejected_safe: ``(B,)`` 0/1 (bool or float) I_safe of the less helpful response.
        b1: B1 (≠ 1).
        alpha: α, the shift.

    Returns:
        ``(B,)`` float targets g_I (the dtype of a float input, else the default dtype).

    Raises:
        ValueError: if ``b1 == 1`` (B3 undefined).
    """
    if b1 == 1.0:
        raise ValueError("bfpo_targets: b1 must differ from 1 (B3 = 1 / (b1 - 1)).")
    dtype = chosen_safe.dtype if chosen_safe.is_floating_point() else torch.get_default_dtype()
    b3 = 1.0 / (b1 - 1.0)
    return b1 * b3 * chosen_safe.to(dtype) - b3 * rejected_safe.to(dtype) - alpha


def safe_dpo_relabel(chosen_unsafe: Tensor, rejected_unsafe: Tensor) -> tuple[Tensor, Tensor]:
    """SafeDPO data transform on pairs ordered by helpfulness.

    SafeDPO, arXiv 2505.20065, Prop. 4.3 (ALGORITHMS.md §3.10). With h = 1[unsafe]:

    ====  ====  ===================
    h_w   h_l   action
    ====  ====  ===================
    0     0     keep
    0     1     keep
    1     0     keep and swap
    1     1     drop
    ====  ====  ===================

    After the transform the (new) winner is always safe.

    Args:
        chosen_unsafe: ``(B,)`` 0/1 (bool or float) h_w of the more helpful response.
        rejected_unsafe: ``(B,)`` 0/1 (bool or float) h_l of the less helpful response.

    Returns:
        ``(swap, keep)``, both ``(B,)`` bool.
    """
    h_w = chosen_unsafe.bool()
    h_l = rejected_unsafe.bool()
    swap = h_w & ~h_l
    keep = ~(h_w & h_l)
    return swap, keep


def safe_dpo_loss(
    chosen_logratio: Tensor,
    rejected_logratio: Tensor,
    *,
    chosen_unsafe: Tensor,
    rejected_unsafe: Tensor,
    beta: float,
    delta: float,
    label: Tensor | None = None,
    weight: Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """SafeDPO loss: DPO on safety-relabelled pairs with a safety margin Δ.

    SafeDPO, arXiv 2505.20065, Eq. 12 (ALGORITHMS.md §3.10). Pairs are first transformed by
    :func:`safe_dpo_relabel` (swap where only the winner is unsafe, drop where both are), then::

        z = β ℓ(ỹ_w) − β ℓ(ỹ_l) − (h̃_l − h̃_w) · Δ
        L = E_w'[ −log σ(z) ],   w' = w · keep

    How the sign acts: after the transform h̃_w = 0 on every kept row, so h̃_l − h̃_w ∈ {0, 1}.
    When the loser is unsafe, Δ ≥ 0 is *subtracted* inside σ, so the safe winner's implicit
    reward β ℓ must exceed the unsafe loser's by Δ more to reach the same loss; the gradient
    keeps pushing unsafe responses down for longer. Δ does not change the optimum (Prop. 4.4).

    Soft labels (population mode): when ``label`` p is given, a row that stays unswapped with
    both responses safe uses ``−[p log σ(z) + (1 − p) log σ(−z)]`` (its Δ term is 0), where p
    is the probability that the original "chosen" response is more helpful. A row with exactly
    one unsafe response always uses label 1 for its safe response, whatever p says: that is
    what the swap encodes.

    Dropped rows get weight 0. If every row is dropped (zero total weight), the loss is
    ``0 · (sum of the log-ratios)``: zero, finite, and still attached to the graph.

    Args:
        chosen_logratio: ``(B,)`` ℓ(y_w) of the more helpful response.
        rejected_logratio: ``(B,)`` ℓ(y_l) of the less helpful response.
        chosen_unsafe: ``(B,)`` 0/1 h_w.
        rejected_unsafe: ``(B,)`` 0/1 h_l.
        beta: β > 0, the KL weight.
        delta: Δ ≥ 0, the safety margin (studied in {0, 2, 5, 10, 20}).
        label: ``(B,)`` soft helpfulness label p ∈ [0, 1] for both-safe rows, or None (1).
        weight: ``(B,)`` non-negative per-pair weights, or None for uniform weights.

    Returns:
        ``(loss, metrics)`` with ``rewards/chosen`` and ``rewards/rejected`` (weighted means
        over kept rows of β ℓ(ỹ_w) and β ℓ(ỹ_l)), ``rewards/margins`` (their difference,
        Δ excluded), ``rewards/accuracies`` (kept rows with that margin
        > 0), ``safe_dpo/dropped_fraction`` and ``safe_dpo/swapped_fraction`` (weighted over
        all rows). Metrics over kept rows are NaN when every row is dropped.
    """
    swap, keep = safe_dpo_relabel(chosen_unsafe, rejected_unsafe)
    dtype = chosen_logratio.dtype
    h_w = chosen_unsafe.to(dtype)
    h_l = rejected_unsafe.to(dtype)

    win = torch.where(swap, rejected_logratio, chosen_logratio)  # (B,) ℓ(ỹ_w)
    lose = torch.where(swap, chosen_logratio, rejected_logratio)  # (B,) ℓ(ỹ_l)
    h_win = torch.where(swap, h_l, h_w)  # (B,) h̃_w, 0 on kept rows
    h_lose = torch.where(swap, h_w, h_l)  # (B,) h̃_l
    margin = beta * (win - lose)  # (B,)
    z = margin - (h_lose - h_win) * delta  # (B,)

    if label is None:
        p = None
    else:
        both_safe = (h_w == 0) & (h_l == 0)
        p = torch.where(both_safe, label.to(dtype), torch.ones_like(z))
    per_example = _soft_logistic(z, p)  # (B,)

    base = torch.ones_like(z) if weight is None else weight.to(dtype)
    kept_weight = base * keep.to(dtype)  # (B,)
    if float(kept_weight.sum()) > 0.0:
        loss = weighted_mean(per_example, kept_weight)
        margin_mean = as_float(weighted_mean(margin, kept_weight))
        chosen_mean = as_float(weighted_mean(beta * win, kept_weight))
        rejected_mean = as_float(weighted_mean(beta * lose, kept_weight))
        accuracy = fraction(margin > 0, kept_weight)
    else:
        loss = 0.0 * (chosen_logratio.sum() + rejected_logratio.sum())
        margin_mean = chosen_mean = rejected_mean = accuracy = float("nan")

    metrics = {
        "rewards/chosen": chosen_mean,
        "rewards/rejected": rejected_mean,
        "rewards/margins": margin_mean,
        "rewards/accuracies": accuracy,
        "safe_dpo/dropped_fraction": fraction(~keep, weight),
        "safe_dpo/swapped_fraction": fraction(swap, weight),
    }
    return loss, metrics
