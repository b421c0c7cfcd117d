"""``ConstrainedDPOTrainer``: TRL's ``DPOTrainer`` with our offline losses and our PrimalDual.

The subclass keeps everything stock TRL does — tokenisation and chat templates, the reference
model (an explicit ``ref_model``, PEFT adapters disabled or a ``ref`` adapter, or precomputed
log-probs), the fused LM head that gives per-token log-probs without materialising the logits,
logging, saving — and trains one of these (:mod:`~constrained_align.integrations.trl.pair_losses`):

- ``dpo``: stock ``DPOTrainer`` itself. The batch goes to TRL's own loss computation, so every
  ``DPOConfig`` option and TRL's metrics are TRL's (delegating rather than re-implementing
  keeps the parity exact and follows TRL as it changes);
- ``lagrangian`` (§3.5–3.8, the C-DPO / CAN / CAID inner step): DPO against the soft label
  p = σ(((r_c − λc_c) − (r_r − λc_r))/T) with λ = ``primal_dual.lam()``;
- ``safe_dpo`` (§3.10) and ``bfpo`` (§3.11, β is τ).

A constrained loss takes the place of TRL's main term; which ``DPOConfig`` options combine with
it, and why the others are refused, is in :mod:`~constrained_align.integrations.trl.dpo_options`.
It logs the metrics stock logs (``rewards/*``, ``logps/*``, ``entropy``, ``logits/*``,
``mean_token_accuracy``, ``num_tokens``, ``aux_loss`` for MoE models), computed the same way.

Data: canonical rows (``prompt, response_0, response_1, better_response_id, ...,
reward_0/1, cost_0/1``) or stock ``chosen``/``rejected`` rows (then only ``dpo``). See
:mod:`~constrained_align.integrations.trl.columns` for the mapping and the extra columns, which
are kept through TRL's column filter and collator and removed before any model call.

**Dual signal (``lagrangian`` only).** Once per optimizer step — after all gradient-accumulation
micro-batches, from a ``on_step_end`` callback — the costs of both responses of every pair of
the step (gathered over processes) are observed with self-normalised importance weights
w̃ = n · softmax(ℓ), ℓ = log π_θ − log π_ref detached, which makes the estimator's value
Σ w̃c / Σ w̃ the self-normalised importance estimate of E_{π_θ}[c] from responses treated as
π_ref draws; then ``primal_dual.step(global_step)`` moves λ when the cadence says so. Why per
response with normalised weights, and what each estimator then means, is explained in
:mod:`~constrained_align.integrations.trl.dual`.

**Checkpoints.** Each checkpoint folder gets ``primal_dual.json`` (``primal_dual.state_dict()``,
written atomically before TRL writes the rest), and ``train(resume_from_checkpoint=...)``
restores it before training continues.

Example::

    from trl import DPOConfig
    from constrained_align.config import DualConfig
    from constrained_align.integrations.trl import ConstrainedDPOTrainer

    trainer = ConstrainedDPOTrainer(
        model, ref_model=ref, args=DPOConfig(output_dir="out", beta=0.1),
        train_dataset=pairs, processing_class=tokenizer,
        loss="lagrangian", dual=DualConfig(cost_limit=0.0, lambda_lr=0.05),
    )
    trainer.train()
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from datasets import Dataset, IterableDataset
from torch import Tensor, nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from trl import DPOConfig, DPOTrainer

from constrained_align.config import DualConfig
from constrained_align.integrations.trl.columns import (
    EXTRA_COLUMNS,
    FIELDS,
    SafetyColumnsCollator,
    to_pair_columns,
)
from constrained_align.integrations.trl.dpo_options import check_options
from constrained_align.integrations.trl.dual import (
    DualSignal,
    DualStepCallback,
    resolve_checkpoint,
)
from constrained_align.integrations.trl.pair_losses import (
    LossParams,
    PairTerms,
    check_hyper_parameters,
    finite,
    get_loss,
)
from constrained_align.integrations.trl.token_metrics import token_metrics
from constrained_align.primal_dual import (
    PrimalDual,
    load_dual_state,
    make_primal_dual,
    save_dual_state,
)

if TYPE_CHECKING:
    from peft import PeftConfig

# Keys of a TRL preference batch that are not model inputs.
_NON_MODEL_KEYS = frozenset({"completion_mask", "ref_chosen_logps", "ref_rejected_logps"})


def _cost_range(dataset: Dataset | IterableDataset) -> float | None:
    """c_max − c_min over the prepared dataset's costs (None for a streamed dataset)."""
    if not isinstance(dataset, Dataset):
        return None
    table = dataset.with_format("numpy")
    costs = np.concatenate([np.asarray(table[col], dtype=float) for col in FIELDS["cost"]])
    costs = costs[np.isfinite(costs)]
    return float(costs.max() - costs.min()) if costs.size else None


class ConstrainedDPOTrainer(DPOTrainer):
    """``trl.DPOTrainer`` training one of our offline losses, with λ from our PrimalDual.

    Args:
        model: as for ``DPOTrainer`` (id, path, model or PeftModel).
        ref_model: the reference; None means TRL's default (PEFT: adapters disabled).
        args: a ``DPOConfig``; β is ``args.beta``. With ``loss="dpo"`` every option is TRL's;
            with a constrained loss see :mod:`.dpo_options`.
        data_collator: None for TRL's preference collator; either way it is wrapped so the
            extra columns come out as tensors.
        train_dataset: canonical pair rows, or stock ``chosen``/``rejected`` rows.
        eval_dataset: the same, optional.
        processing_class: tokenizer or processor.
        compute_metrics: as for ``DPOTrainer``.
        callbacks: as for ``DPOTrainer``.
        optimizers: as for ``DPOTrainer``.
        quantization_config: as for ``DPOTrainer``.
        peft_config: as for ``DPOTrainer`` (e.g. a ``LoraConfig``).
        loss: ``"dpo"``, ``"lagrangian"``, ``"safe_dpo"`` or ``"bfpo"``.
        primal_dual: the PrimalDual with a ``"cost"`` constraint (``lagrangian`` only).
        dual: or a ``DualConfig`` to build one with ``make_primal_dual`` (``lagrangian`` only;
            a null ``lambda_lr`` is sized from the training costs' range).
        temperature: T of the Lagrangian relabelling σ(Δr_λ / T).
        delta: SafeDPO's margin Δ.
        b1: BFPO's B_1.
        alpha: BFPO's α.

    Raises:
        ValueError: on an unknown loss, a missing or superfluous multiplier, unsupported
            ``DPOConfig`` options, or data lacking what the loss needs.
    """

    _tag_names: ClassVar[list[str]] = ["trl", "dpo", "constrained-align"]

    def __init__(
        self,
        model: str | PreTrainedModel | nn.Module,
        ref_model: PreTrainedModel | None = None,
        args: DPOConfig | None = None,
        data_collator: Callable[[list[dict[str, Any]]], dict[str, Any]] | None = None,
        train_dataset: Dataset | IterableDataset | None = None,
        eval_dataset: Dataset | IterableDataset | Mapping[str, Dataset] | None = None,
        processing_class: PreTrainedTokenizerBase | None = None,
        compute_metrics: Callable[..., dict] | None = None,
        callbacks: list[TrainerCallback] | None = None,
        optimizers: tuple[Any, Any] = (None, None),
        quantization_config: Any = None,
        peft_config: PeftConfig | None = None,
        *,
        loss: str,
        primal_dual: PrimalDual | None = None,
        dual: DualConfig | None = None,
        temperature: float = 1.0,
        delta: float = 10.0,
        b1: float = 3.0,
        alpha: float = 0.5,
    ):
        # Set before super().__init__, which calls _prepare_dataset.
        self.loss_name = loss
        self.loss_spec = get_loss(loss)
        self._check_multiplier(primal_dual, dual)
        check_hyper_parameters(temperature, delta, b1)
        main = check_options(args or DPOConfig(output_dir="unused"), loss)
        super().__init__(
            model,
            ref_model=ref_model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            compute_metrics=compute_metrics,
            callbacks=callbacks,
            optimizers=optimizers,
            quantization_config=quantization_config,
            peft_config=peft_config,
        )
        self.loss_params = LossParams(
            beta=self.beta, temperature=temperature, delta=delta, b1=b1, alpha=alpha, main=main
        )
        self.data_collator = SafetyColumnsCollator(self.data_collator)
        self.primal_dual = primal_dual
        if dual is not None:
            range_ = _cost_range(self.train_dataset)
            self.primal_dual = make_primal_dual(dual, beta=self.beta, cost_range=range_)
        self.dual_signal: DualSignal | None = None
        if self.primal_dual is not None:
            self.dual_signal = DualSignal(self.primal_dual)
            self.add_callback(DualStepCallback(self.dual_signal, self._log_train_metrics))

    def _check_multiplier(self, primal_dual: PrimalDual | None, dual: DualConfig | None) -> None:
        given = (primal_dual is not None) + (dual is not None)
        if given > 1:
            raise ValueError("pass primal_dual or dual, not both")
        if self.loss_spec.uses_lambda and not given:
            raise ValueError(f"loss {self.loss_name!r} needs λ: pass primal_dual or dual")
        if given and not self.loss_spec.uses_lambda:
            raise ValueError(f"loss {self.loss_name!r} has no λ; drop primal_dual/dual")

    # --- data ---------------------------------------------------------------------------------

    def _prepare_dataset(
        self,
        dataset: Dataset | IterableDataset,
        processing_class: Any,
        args: DPOConfig,
        dataset_name: str,
    ) -> Dataset | IterableDataset:
        """Map canonical rows to chosen/rejected + extra columns, then let TRL tokenise."""
        dataset = to_pair_columns(
            dataset,
            needs=self.loss_spec.needs,
            needs_better=self.loss_spec.needs_better,
            loss_name=self.loss_name,
            num_proc=args.dataset_num_proc,
        )
        return super()._prepare_dataset(dataset, processing_class, args, dataset_name)

    def _set_signature_columns_if_needed(self) -> None:
        """TRL's columns plus the extra ones, so ``remove_unused_columns`` keeps them."""
        super()._set_signature_columns_if_needed()
        self._signature_columns = list(dict.fromkeys([*self._signature_columns, *EXTRA_COLUMNS]))

    # --- loss -----------------------------------------------------------------------------------

    def compute_ref_log_probs(
        self, model: nn.Module, inputs: dict[str, Tensor]
    ) -> tuple[Tensor, Tensor]:
        """TRL's reference log-probs, with the extra columns kept away from the model."""
        model_inputs = {k: v for k, v in inputs.items() if k not in EXTRA_COLUMNS}
        return super().compute_ref_log_probs(model, model_inputs)

    def _policy_forward(
        self, model: nn.Module, inputs: Mapping[str, Tensor]
    ) -> tuple[Any, Tensor, Tensor]:
        """One forward over the ``[chosen; rejected]`` block through TRL's fused LM head:
        its outputs, the ``(2B, T − 1)`` per-token log-probs of the next token (zero outside the
        completion) and the shifted completion mask."""
        kwargs = {k: v for k, v in inputs.items() if k not in _NON_MODEL_KEYS}
        if self.aux_loss_enabled:
            kwargs["output_router_logits"] = True
        mask = inputs["completion_mask"][..., 1:]  # (2B, T − 1)
        labels = inputs["input_ids"].masked_fill(inputs["completion_mask"] == 0, -100)
        outputs = model(**kwargs, labels=labels, use_cache=False, fused_lm_head=True)
        # Prompt-learning PEFT prepends virtual tokens: keep the last T − 1 positions.
        return outputs, outputs.log_probs[:, -mask.size(1) :], mask

    def _reference_logps(self, inputs: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        """``(B,)`` reference log-probs: precomputed columns, ``ref_model``, or adapters off."""
        if self.precompute_ref_logps:
            return inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        reference = self.ref_model if self.ref_model is not None else self.model
        return self.compute_ref_log_probs(reference, dict(inputs))

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Tensor],
        return_outputs: bool = False,
        num_items_in_batch: Tensor | None = None,
    ) -> Tensor | tuple[Tensor, Any]:
        """``dpo``: TRL's own loss. Otherwise our loss on one batch in place of TRL's main term,
        beside TRL's ``sft`` term if asked, with stock's metrics (TRL's extension point)."""
        model_inputs = {k: v for k, v in inputs.items() if k not in EXTRA_COLUMNS}
        if self.loss_name == "dpo":
            return super().compute_loss(model, model_inputs, return_outputs, num_items_in_batch)
        mode = "train" if self.model.training else "eval"
        outputs, per_token, mask = self._policy_forward(model, model_inputs)
        chosen_logps, rejected_logps = per_token.sum(dim=1).chunk(2, dim=0)
        ref_chosen, ref_rejected = self._reference_logps(model_inputs)
        lengths = model_inputs["completion_mask"].sum(dim=1).chunk(2, dim=0)
        columns = {k: inputs[k] for k in EXTRA_COLUMNS if k in inputs}
        terms = PairTerms(
            chosen_logps - ref_chosen, rejected_logps - ref_rejected, columns, lengths=lengths
        )
        lam = self.primal_dual.lam() if self.primal_dual is not None else 0.0
        main, loss_metrics = self.loss_spec.fn(terms, self.loss_params, lam)
        loss = self._weighted_terms(main, per_token, mask)
        if self.aux_loss_enabled:
            loss = loss + self.router_aux_loss_coef * outputs.aux_loss
            aux = self.accelerator.gather_for_metrics(outputs.aux_loss.detach())
            self._log_metrics(mode, {"aux_loss": aux.mean().item()})
        self._record_metrics(mode, terms, (chosen_logps, rejected_logps), model_inputs)
        self._log_metrics(mode, token_metrics(self.accelerator, outputs, mask))
        self._log_metrics(mode, finite(loss_metrics))
        if self.dual_signal is not None:
            self._log_metrics(mode, {"dual/lambda": lam})
            if mode == "train":
                self._record_dual_signal(terms)
        if not return_outputs:
            return loss
        # Deprecated in TRL (logits for compute_metrics): recompute them as TRL does.
        with torch.no_grad():
            kwargs = {k: v for k, v in model_inputs.items() if k not in _NON_MODEL_KEYS}
            outputs = model(**kwargs)
        return loss, outputs

    def _weighted_terms(self, main: Tensor, per_token: Tensor, mask: Tensor) -> Tensor:
        """Σ weight · term over ``loss_type``: our loss for the main term, TRL's ``sft`` (the
        mean NLL over the chosen completions' tokens) beside it."""
        weights = self.args.loss_weights or [1.0] * len(self.args.loss_type)
        total = main.new_zeros(())
        for kind, weight in zip(self.args.loss_type, weights, strict=True):
            if kind == "sft":
                chosen_tokens, _ = per_token.chunk(2, dim=0)
                chosen_mask, _ = mask.chunk(2, dim=0)
                term = -chosen_tokens[chosen_mask.bool()].mean()
            else:
                term = main
            total = total + weight * term
        return total

    # --- metrics and the dual signal ------------------------------------------------------------

    def _log_metrics(self, mode: str, metrics: Mapping[str, float]) -> None:
        for key, value in metrics.items():
            self._metrics[mode][key].append(value)

    def _log_train_metrics(self, metrics: Mapping[str, float]) -> None:
        self._log_metrics("train", metrics)

    def _record_metrics(
        self,
        mode: str,
        terms: PairTerms,
        logps: tuple[Tensor, Tensor],
        inputs: Mapping[str, Tensor],
    ) -> None:
        """TRL's ``rewards/*``, ``logps/*`` and ``num_tokens``, computed as stock computes them."""
        gather = self.accelerator.gather
        chosen_logps, rejected_logps = logps
        chosen_rewards = self.beta * terms.chosen.detach()  # (B,)
        rejected_rewards = self.beta * terms.rejected.detach()  # (B,)
        means = {
            "rewards/chosen": chosen_rewards,
            "rewards/rejected": rejected_rewards,
            "rewards/accuracies": (chosen_rewards > rejected_rewards).float(),
            "rewards/margins": chosen_rewards - rejected_rewards,
            "logps/chosen": chosen_logps.detach(),
            "logps/rejected": rejected_logps.detach(),
        }
        self._log_metrics(mode, {key: gather(value).mean().item() for key, value in means.items()})
        if mode == "train":
            tokens = gather(inputs["attention_mask"].sum()).sum().item()
            self._total_train_tokens += tokens // self._tp_size
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]

    def _record_dual_signal(self, terms: PairTerms) -> None:
        """Buffer this micro-batch's (ℓ, c) of both responses, gathered over processes."""
        cost_chosen, cost_rejected = terms.field("cost")
        logratios = torch.cat([terms.chosen, terms.rejected]).detach()  # (2B,)
        costs = torch.cat([cost_chosen, cost_rejected])  # (2B,)
        gather = self.accelerator.gather
        self.dual_signal.record(gather(logratios), gather(costs))

    # --- checkpoints ----------------------------------------------------------------------------

    def _save_checkpoint(self, model: nn.Module, trial: Any) -> None:
        """Write ``primal_dual.json`` into the checkpoint folder, then TRL's checkpoint."""
        if self.primal_dual is not None and self.args.should_save:
            folder = Path(self._get_output_dir(trial=trial))
            folder = folder / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            save_dual_state(self.primal_dual, folder, self.state.global_step)
        super()._save_checkpoint(model, trial)

    def train(
        self,
        resume_from_checkpoint: str | bool | None = None,
        trial: Any = None,
        ignore_keys_for_eval: list[str] | None = None,
        **kwargs: Any,
    ) -> Any:
        """``Trainer.train``, restoring the multiplier first when resuming from a checkpoint."""
        resume = resolve_checkpoint(resume_from_checkpoint, self.args.output_dir)
        if resume and self.primal_dual is not None:
            load_dual_state(self.primal_dual, resume)
        return super().train(
            resume_from_checkpoint=resume,
            trial=trial,
            ignore_keys_for_eval=ignore_keys_for_eval,
            **kwargs,
        )
