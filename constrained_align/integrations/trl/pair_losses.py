"""The four offline losses the TRL trainer can train with, one small function each.

Every function takes the sequence log-ratios ℓ(y) = log π_θ(y|x) − log π_ref(y|x) of the
"chosen" (more helpful) and "rejected" responses, the batch's extra columns (see
:mod:`~constrained_align.integrations.trl.columns`), the hyper-parameters and λ, and returns
``(loss, metrics)``. The metrics are only those the trainer does not log itself: the TRL-style
``rewards/*`` and ``logps/*`` metrics are computed once, the same way for every loss.

=============  ===============================================================  ===============
key            loss                                                             ALGORITHMS.md
=============  ===============================================================  ===============
``dpo``        −log σ(β ℓ_c − β ℓ_r)                                            §3.4
``lagrangian`` DPO against p = σ(((r_c − λc_c) − (r_r − λc_r))/T)               §3.5–3.8
``safe_dpo``   SafeDPO: relabel by h, margin Δ                                  §3.10
``bfpo``       (ℓ_c − ℓ_r − g_I(I_safe(c), I_safe(r))/τ)², τ = β                §3.11
=============  ===============================================================  ===============
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from torch import Tensor

from constrained_align.integrations.trl.columns import FIELDS
from constrained_align.losses import (
    bfpo_targets,
    dpo_loss,
    ipo_squared_loss,
    lagrangian_preference,
    safe_dpo_loss,
)


@dataclass(frozen=True)
class PairTerms:
    """One batch of pairs as the losses see it.

    Attributes:
        chosen: ``(B,)`` ℓ(y_c), the more helpful response's log-ratio.
        rejected: ``(B,)`` ℓ(y_r).
        columns: the extra ``(B,)`` columns (:data:`~.columns.EXTRA_COLUMNS`) of the batch.
        lengths: ``(B,)`` completion token counts of both responses (IPO's normalisation).
    """

    chosen: Tensor
    rejected: Tensor
    columns: Mapping[str, Tensor]
    lengths: tuple[Tensor, Tensor] | None = None

    def field(self, name: str) -> tuple[Tensor, Tensor]:
        """``(chosen, rejected)`` values of a field of :data:`~.columns.FIELDS`, as ``(B,)``."""
        chosen_col, rejected_col = FIELDS[name]
        return self.columns[chosen_col], self.columns[rejected_col]


@dataclass(frozen=True)
class LossParams:
    """Hyper-parameters of the losses.

    Attributes:
        beta: β, the KL weight (BFPO's τ).
        temperature: T of the Bradley–Terry relabelling of the Lagrangian loss.
        delta: SafeDPO's margin Δ ≥ 0.
        b1: BFPO's B_1.
        alpha: BFPO's α.
        main: the Lagrangian loss's main term, ``sigmoid``, ``hinge`` or ``ipo``
            (:mod:`~constrained_align.integrations.trl.dpo_options`).
    """

    beta: float
    temperature: float = 1.0
    delta: float = 10.0
    b1: float = 3.0
    alpha: float = 0.5
    main: str = "sigmoid"

    def __post_init__(self) -> None:
        if not self.beta > 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")
        check_hyper_parameters(self.temperature, self.delta, self.b1)


def check_hyper_parameters(temperature: float, delta: float, b1: float) -> None:
    """Raise ValueError unless T > 0, Δ ≥ 0 and B_1 ≠ 1."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not delta >= 0:
        raise ValueError(f"delta must be >= 0, got {delta}")
    if b1 == 1.0:
        raise ValueError("b1 must differ from 1 (B_3 = 1 / (b1 - 1))")


Metrics = dict[str, float]
LossFn = Callable[[PairTerms, LossParams, float], tuple[Tensor, Metrics]]


@dataclass(frozen=True)
class LossSpec:
    """A loss and what it needs from the data and the trainer.

    Attributes:
        fn: ``(terms, params, λ) -> (loss, metrics)``.
        needs: fields of :data:`~.columns.FIELDS` required on every row.
        needs_better: whether rows need a helpfulness preference (``better_response_id``).
        uses_lambda: whether the loss reads λ (then the trainer drives a PrimalDual).
    """

    fn: LossFn
    needs: tuple[str, ...] = ()
    needs_better: bool = True
    uses_lambda: bool = False


def dpo(terms: PairTerms, params: LossParams, lam: float) -> tuple[Tensor, Metrics]:
    """Plain DPO on the helpfulness preference (λ unused)."""
    loss, _ = dpo_loss(terms.chosen, terms.rejected, beta=params.beta)
    return loss, {}


def lagrangian(terms: PairTerms, params: LossParams, lam: float) -> tuple[Tensor, Metrics]:
    """The soft label of r − λc (the C-DPO / CAN / CAID inner step) in the main term
    ``params.main``: DPO's sigmoid, SLiC's hinge or IPO's squared loss (derivations in
    :mod:`~constrained_align.integrations.trl.dpo_options`)."""
    (r_c, r_r), (c_c, c_r) = terms.field("reward"), terms.field("cost")
    label = lagrangian_preference(r_c, c_c, r_r, c_r, lam=lam, temperature=params.temperature)
    label = label.to(terms.chosen.dtype)
    metrics = {"lagrangian/label_mean": float(label.mean())}
    if params.main == "hinge":
        z = params.beta * (terms.chosen - terms.rejected)
        loss = (label * (1 - z).clamp_min(0) + (1 - label) * (1 + z).clamp_min(0)).mean()
    elif params.main == "ipo":
        if terms.lengths is None:
            raise ValueError("the IPO term needs the completions' token counts")
        chosen = terms.chosen / terms.lengths[0].clamp_min(1)
        rejected = terms.rejected / terms.lengths[1].clamp_min(1)
        loss, _ = ipo_squared_loss(chosen, rejected, target=(label - 0.5) / params.beta)
    else:
        loss, _ = dpo_loss(terms.chosen, terms.rejected, beta=params.beta, label=label)
    return loss, metrics


def safe_dpo(terms: PairTerms, params: LossParams, lam: float) -> tuple[Tensor, Metrics]:
    """SafeDPO: keep/swap/drop by the unsafe flags, margin Δ on safe-over-unsafe pairs."""
    h_c, h_r = terms.field("unsafe")
    loss, metrics = safe_dpo_loss(
        terms.chosen,
        terms.rejected,
        chosen_unsafe=h_c,
        rejected_unsafe=h_r,
        beta=params.beta,
        delta=params.delta,
    )
    return loss, {
        "safe_dpo/margins": metrics["rewards/margins"],
        "safe_dpo/accuracies": metrics["rewards/accuracies"],
        "safe_dpo/dropped_fraction": metrics["safe_dpo/dropped_fraction"],
        "safe_dpo/swapped_fraction": metrics["safe_dpo/swapped_fraction"],
    }


def bfpo(terms: PairTerms, params: LossParams, lam: float) -> tuple[Tensor, Metrics]:
    """BFPO's squared loss onto g_I/τ with τ = β (chosen is the more helpful response)."""
    h_c, h_r = terms.field("unsafe")
    target = bfpo_targets(1.0 - h_c, 1.0 - h_r, b1=params.b1, alpha=params.alpha) / params.beta
    loss, metrics = ipo_squared_loss(terms.chosen, terms.rejected, target=target.to(terms.chosen))
    return loss, {"bfpo/target_mean": float(target.mean()), "loss/squared": metrics["loss/squared"]}


LOSSES: dict[str, LossSpec] = {
    "dpo": LossSpec(dpo),
    "lagrangian": LossSpec(
        lagrangian, needs=("reward", "cost"), needs_better=False, uses_lambda=True
    ),
    "safe_dpo": LossSpec(safe_dpo, needs=("unsafe",)),
    "bfpo": LossSpec(bfpo, needs=("unsafe",)),
}


def get_loss(name: str) -> LossSpec:
    """The :class:`LossSpec` registered under ``name``.

    Raises:
        ValueError: on an unknown name.
    """
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; valid: {', '.join(LOSSES)}") from None


def finite(metrics: Metrics) -> Metrics:
    """Drop NaN/inf values (e.g. SafeDPO's kept-row metrics when every row was dropped)."""
    return {key: value for key, value in metrics.items() if math.isfinite(value)}
