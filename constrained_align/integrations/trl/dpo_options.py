"""Which ``DPOConfig`` options combine with which of ``ConstrainedDPOTrainer``'s losses.

``loss="dpo"`` is stock ``DPOTrainer``: the trainer hands the batch to TRL's own loss
computation, so every option TRL has (loss types and their weights, f-divergences, ``ld_alpha``,
WPO weighting, label smoothing, precomputed reference log-probs, the MoE router loss, PEFT with
or without a reference adapter) behaves exactly as in stock TRL.

A constrained loss (``lagrangian``, ``safe_dpo``, ``bfpo``) takes the place of TRL's main
term. What composes with it, and why (ALGORITHMS.md §3.5–3.11 for the losses):

- ``loss_type`` names the main term and, optionally, ``sft`` beside it with
  ``loss_weights``: the total is w_main · L_constrained + w_sft · NLL(chosen), the NLL being the
  mean over the chosen completions' tokens, as TRL's ``sft`` term;
- for ``lagrangian`` the main term may be ``sigmoid`` (default), ``hinge`` or ``ipo``, each
  with the soft label p = σ(Δr_λ/T) in place of the hard one. With z = β(ℓ_c − ℓ_r):

  * sigmoid: −p log σ(z) − (1 − p) log σ(−z), the Bradley–Terry likelihood of a soft label;
  * hinge (SLiC): p·max(0, 1 − z) + (1 − p)·max(0, 1 + z), the expected hinge loss when the
    preferred response is drawn with probability p;
  * ipo: (h − (p − ½)/β)² with h = ℓ_c/|y_c| − ℓ_r/|y_r| (TRL's per-token normalisation).
    IPO (Azar et al., 2023, Eq. 17) regresses h onto (I − ½)/τ for a sampled preference I;
    the minimiser in expectation over I ~ Bernoulli(p) is h = (p − ½)/τ, τ = β, so the soft
    label enters as the target. With p = 1 it is TRL's (h − 1/(2β))²;
- ``safe_dpo`` and ``bfpo`` define their own main term (SafeDPO's margin Δ inside the
  sigmoid; BFPO's squared loss onto its safety targets), so their main term is ``sigmoid``,
  TRL's default, by name only;
- the MoE router auxiliary loss is added as TRL adds it (router_aux_loss_coef · aux_loss).

Refused, with the reason in the error:

- the other TRL loss types (``exo_pair``, ``nca_pair``, ``robust``, ``bco_pair``,
  ``sppo_hard``, ``aot``, ``aot_unpaired``, ``apo_zero``, ``apo_down``, ``discopop``,
  ``sigmoid_norm``): each is its own objective on hard labels, and a soft label or a safety
  rule has no single defined place in it;
- ``f_divergence_type`` other than ``reverse_kl`` and ``ld_alpha``: the constrained
  optima (π_λ ∝ π_ref · exp(r_λ/β), SafeDPO's and BFPO's targets) and the dual step's
  importance weights w ∝ exp(ℓ) are derived for the reverse-KL regulariser and the plain
  sequence log-ratio ℓ;
- ``use_weighting`` (WPO): it reweights pairs by the policy's own probability, which changes
  the expectation the constrained objective and the dual's estimate are over;
- ``label_smoothing``: TRL uses it only in ``robust``, ``exo_pair`` and ``aot*``; the
  Lagrangian loss already has soft labels, and SafeDPO's swap and BFPO's targets are hard.
"""

from __future__ import annotations

from typing import Any

#: The main terms each constrained loss can take, by ``loss_type``.
MAIN_TERMS = {
    "lagrangian": ("sigmoid", "hinge", "ipo"),
    "safe_dpo": ("sigmoid",),
    "bfpo": ("sigmoid",),
}
#: TRL loss types that may stand beside a constrained main term.
SIDE_TERMS = ("sft",)
REASONS = {
    "loss_type": "each of TRL's other loss types is its own objective on hard labels, with no "
    "defined place for a soft label or a safety rule",
    "f_divergence_type": "the constrained optima and the dual step's importance weights are "
    "derived for the reverse-KL regulariser",
    "ld_alpha": "the constrained optima and the dual step's importance weights are derived for "
    "the plain sequence log-ratio, not LD-DPO's length-desensitised one",
    "use_weighting": "WPO reweights pairs by the policy's own probability, which changes the "
    "expectation the constrained objective and the dual's estimate are over",
    "label_smoothing": "TRL uses it only in robust, exo_pair and aot; the Lagrangian loss has "
    "soft labels already, and SafeDPO's swap and BFPO's targets are hard",
}


def check_options(args: Any, loss: str) -> str:
    """The constrained loss's main term (``sigmoid``, ``hinge`` or ``ipo``) after checking that
    ``args`` (a ``DPOConfig``) asks for nothing that does not combine with ``loss``.

    Raises:
        ValueError: naming each refused option and why.
    """
    if loss == "dpo":
        return "sigmoid"
    types = list(args.loss_type)
    main = [t for t in types if t not in SIDE_TERMS]
    problems = []
    if len(main) != 1 or main[0] not in MAIN_TERMS[loss]:
        allowed = " or ".join(MAIN_TERMS[loss])
        problems.append(
            f"loss_type={types}: {loss} takes one main term ({allowed}) and optionally "
            f"{', '.join(SIDE_TERMS)} beside it; {REASONS['loss_type']}"
        )
    if args.f_divergence_type != "reverse_kl":
        problems.append(
            f"f_divergence_type={args.f_divergence_type!r}: {REASONS['f_divergence_type']}"
        )
    for name in ("ld_alpha", "use_weighting", "label_smoothing"):
        if getattr(args, name) not in (None, False, 0, 0.0):
            problems.append(f"{name}={getattr(args, name)!r}: {REASONS[name]}")
    if problems:
        raise ValueError(
            f"ConstrainedDPOTrainer(loss={loss!r}) does not combine with " + "; ".join(problems)
        )
    return main[0]
