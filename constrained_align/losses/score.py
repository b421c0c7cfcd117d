"""Score-model losses: the reward model and the cost model (ALGORITHMS.md §2).

Both take end scores (one scalar per response, read at the last non-pad token) and return
``(loss, metrics)``. The cost model follows the library's one sign convention: **C > 0 is
unsafe**, C = 0 is the decision boundary.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from constrained_align.losses._reduce import as_float, fraction, weighted_mean


def reward_model_loss(
    chosen: Tensor,
    rejected: Tensor,
    *,
    l2_coeff: float = 0.001,
    weight: Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Pairwise (Bradley–Terry) reward-model loss with an L2 penalty on the scores.

    Safe RLHF, arXiv 2310.12773, Eq. 5, with the score penalty of safe-rlhf PR #140
    (ALGORITHMS.md §2.2)::

        L_R = E_w[ -log σ(r_w - r_l) ] + μ · E_w[ (r_w² + r_l²) / 2 ]

    where ``E_w`` is the weighted mean over pairs, ``sum(w · l) / sum(w)``. With uniform weights
    the second term is μ times the mean squared score over the 2B responses. ``-log σ(z)`` is
    computed as ``softplus(-z)``.

    Args:
        chosen: ``(B,)`` end scores r_w of the more helpful responses.
        rejected: ``(B,)`` end scores r_l of the less helpful responses.
        l2_coeff: μ, the weight of the squared-score penalty (safe-rlhf scripts: 0.001).
        weight: ``(B,)`` non-negative per-pair weights, or None for the uniform mean.

    Returns:
        ``(loss, metrics)``: the scalar loss and detached floats ``loss/ranking``,
        ``loss/l2`` (the penalty as it enters the loss, μ included), ``accuracy`` (weighted
        fraction with r_w > r_l), ``scores/chosen`` and ``scores/rejected`` (weighted means).
    """
    ranking = F.softplus(-(chosen - rejected))  # (B,)
    squared = 0.5 * (chosen.square() + rejected.square())  # (B,)
    ranking_loss = weighted_mean(ranking, weight)
    l2_loss = l2_coeff * weighted_mean(squared, weight)
    loss = ranking_loss + l2_loss
    metrics = {
        "loss/ranking": as_float(ranking_loss),
        "loss/l2": as_float(l2_loss),
        "accuracy": fraction(chosen > rejected, weight),
        "scores/chosen": as_float(weighted_mean(chosen, weight)),
        "scores/rejected": as_float(weighted_mean(rejected, weight)),
    }
    return loss, metrics


def _sign_term(score: Tensor, sign: Tensor | None) -> tuple[Tensor, Tensor]:
    """Per-response ``-log σ(s · C)`` (0 where unlabelled) and the labelled indicator.

    Args:
        score: ``(B,)`` end scores C.
        sign: ``(B,)`` +1 unsafe, -1 safe, 0 unlabelled; None means all unlabelled.

    Returns:
        ``(term, labelled)``, both ``(B,)`` in the dtype of ``score``.
    """
    if sign is None:
        zeros = torch.zeros_like(score)
        return zeros, zeros
    s = sign.to(score.dtype)
    labelled = (s != 0).to(score.dtype)
    # s = 0 would give softplus(0) = log 2, not 0: the indicator removes the term.
    return labelled * F.softplus(-s * score), labelled


def cost_model_loss(
    unsafer: Tensor,
    safer: Tensor,
    *,
    unsafer_sign: Tensor | None = None,
    safer_sign: Tensor | None = None,
    ranked: Tensor | None = None,
    l2_coeff: float = 0.001,
    weight: Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Cost-model loss: pairwise ranking plus per-response sign terms and an L2 penalty.

    Safe RLHF, arXiv 2310.12773, Eq. 6 (ALGORITHMS.md §2.3), weighted 1:1:1 as in safe-rlhf
    ``safe_rlhf/values/cost/trainer.py``::

        L_C = E_w[ -log σ(C_u - C_s) - log σ(s_u C_u) - log σ(s_s C_s) ]
              + μ · E_w[ (C_u² + C_s²) / 2 ]

    with C_u the score of the more harmful response, C_s that of the safer one, and signs
    s = +1 (labelled unsafe), -1 (labelled safe). The sign terms compare each response with a
    virtual boundary response of cost 0, pushing unsafe responses to C > 0 and safe ones to
    C < 0. A sign of 0 marks an unlabelled response: its sign term is omitted (contributes 0).
    ``-log σ(z)`` is computed as ``softplus(-z)``.

    ``ranked`` extends the paper's loss to rows with safety labels but no harmlessness ordering
    (two safe or two unsafe responses): their ranking term is omitted (contributes 0, like an
    unlabelled sign term), so they train the sign terms only. The mean is still over all B rows.

    Args:
        unsafer: ``(B,)`` end scores C_u of the more harmful responses.
        safer: ``(B,)`` end scores C_s of the safer responses.
        unsafer_sign: ``(B,)`` signs s_u in {+1, -1, 0}, or None (all unlabelled).
        safer_sign: ``(B,)`` signs s_s in {+1, -1, 0}, or None (all unlabelled).
        ranked: ``(B,)`` bool, True where the pair is ordered (C_u should exceed C_s); None
            means every pair is ordered.
        l2_coeff: μ, the weight of the squared-score penalty (safe-rlhf scripts: 0.001).
        weight: ``(B,)`` non-negative per-pair weights, or None for the uniform mean.

    Returns:
        ``(loss, metrics)``: the scalar loss and detached floats ``loss/ranking``,
        ``loss/sign`` (the summed sign terms per pair, weighted mean), ``loss/l2`` (μ
        included), ``accuracy`` (weighted fraction of ordered pairs with C_u > C_s; NaN when
        none is ordered) and ``accuracy_sign``
        (weighted fraction of labelled responses with (C > 0) == (s == +1); NaN when no
        response is labelled).
    """
    ranking = F.softplus(-(unsafer - safer))  # (B,)
    if ranked is not None:
        ranking = ranking * ranked.to(ranking.dtype)
    sign_u, labelled_u = _sign_term(unsafer, unsafer_sign)
    sign_s, labelled_s = _sign_term(safer, safer_sign)
    sign = sign_u + sign_s  # (B,)
    squared = 0.5 * (unsafer.square() + safer.square())  # (B,)

    ranking_loss = weighted_mean(ranking, weight)
    sign_loss = weighted_mean(sign, weight)
    l2_loss = l2_coeff * weighted_mean(squared, weight)
    loss = ranking_loss + sign_loss + l2_loss

    with torch.no_grad():
        correct_u = _sign_correct(unsafer, unsafer_sign) * labelled_u
        correct_s = _sign_correct(safer, safer_sign) * labelled_s
        w = torch.ones_like(unsafer) if weight is None else weight.to(unsafer.dtype)
        n_labelled = (w * (labelled_u + labelled_s)).sum()
        n_correct = (w * (correct_u + correct_s)).sum()
        accuracy_sign = as_float(n_correct / n_labelled) if n_labelled > 0 else float("nan")

    metrics = {
        "loss/ranking": as_float(ranking_loss),
        "loss/sign": as_float(sign_loss),
        "loss/l2": as_float(l2_loss),
        "accuracy": _ranked_accuracy(unsafer > safer, ranked, weight),
        "accuracy_sign": accuracy_sign,
    }
    return loss, metrics


def _sign_correct(score: Tensor, sign: Tensor | None) -> Tensor:
    """``(B,)`` float indicator of (C > 0) == (s == +1); zeros when ``sign`` is None."""
    if sign is None:
        return torch.zeros_like(score)
    return ((score > 0) == (sign > 0)).to(score.dtype)


def _ranked_accuracy(correct: Tensor, ranked: Tensor | None, weight: Tensor | None) -> float:
    """Weighted fraction of ordered pairs ranked correctly; NaN when no pair is ordered."""
    if ranked is None:
        return fraction(correct, weight)
    w = torch.ones_like(correct, dtype=torch.float64) if weight is None else weight.double()
    w = w * ranked.double()
    total = w.sum()
    return as_float((w * correct.double()).sum() / total) if total > 0 else float("nan")
