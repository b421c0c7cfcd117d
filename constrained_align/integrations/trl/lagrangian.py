"""GRPO-Lagrangian on stock TRL: a callback that drives the cost's reward weight with our λ.

ALGORITHMS.md §3.3. Stock ``trl.GRPOTrainer`` / ``trl.RLOOTrainer`` score each completion with
``reward_funcs`` and combine them with the weights ``trainer.reward_weights``. With a reward
function r (weight 1) and a cost function c (weight −λ) they maximise E[r − λc], the Lagrangian
of ``max E[r] s.t. E[c] ≤ d``; :class:`LagrangianCallback` moves λ with our
:class:`~constrained_align.primal_dual.PrimalDual` from the raw costs of the training batches.

Usage::

    from trl import GRPOConfig, GRPOTrainer
    from constrained_align.config import DualConfig
    from constrained_align.integrations.trl import LagrangianCallback, ScoreFunction

    callback = LagrangianCallback(
        cost_scorer, dual=DualConfig(multiplier="log_sgd", lambda_init=1.0, lambda_lr=0.1)
    )
    trainer = GRPOTrainer(
        "path/to/policy",
        reward_funcs=[ScoreFunction(reward_scorer, "reward"), callback.cost_fn],
        args=GRPOConfig(output_dir="out", beta=0.05, scale_rewards="none"),
        train_dataset=prompts,
    )
    callback.attach(trainer)  # or: trainer, callback = make_lagrangian(GRPOTrainer, ...)
    trainer.train()           # train(resume_from_checkpoint=...) also restores λ

The scorers are ``TextScorer`` objects or callables ``fn(prompts, responses, contexts)``
(:mod:`~constrained_align.integrations.trl.score_funcs`, which also handles conversational data).

**How λ reaches the weights, and when.** ``attach`` writes −λ₀ into
``trainer.reward_weights[cost_index]`` (an internal TRL tensor that trl 1.16 reads in
``_generate_and_score_completions`` every time it scores a generation batch, in the advantages
and in the logged ``reward``). Then, at each optimizer step k (``on_step_end``, after gradient
accumulation): the costs the cost function recorded since the last step (the training batches
generated during step k, gathered over processes) are observed, ``primal_dual.step(n)`` runs,
and −λ_k is written back. The next generation batch (drawn at the first micro-step of step k+1)
is scored with −λ_k: batch k+1 is scored with the λ updated from batch k's costs, and batch 1
with λ₀ — "update once per generation batch, before the policy steps that use it". ``n`` counts
generation batches, ⌈k · gradient_accumulation_steps / (steps_per_generation · num_iterations)⌉,
which is the global step in TRL's default setting; a step that generated nothing leaves λ alone
(its reused completions keep the weight they were scored with). ``dual/lambda`` in a step's log
is λ_k, the value the *next* batch is scored with; ``constraint/cost_estimate`` and
``constraint/violation`` are the estimator's value and ê − d of the last update, and the cost
function logs ``constraint/batch_cost``, the mean raw cost of each generation batch.

**What TRL's normalisation does to the weighting.** With GRPO's ``sum_then_normalize`` TRL forms
r − λc per completion, then subtracts the group mean and divides by a std given by
``scale_rewards``: ``"none"`` gives A = Â^r − λÂ^c, whose KL-regularised fixed point is exactly π_λ
(use it); ``"batch"`` divides every advantage by one batch-wide number, which keeps the r : c
trade-off (it only rescales the step); ``"group"`` (TRL's default) divides each prompt's group by
its own std, so λ trades normalised units and is not the multiplier of §1.3. With
``normalize_then_sum`` reward and cost are each standardised per group before weighting, so λ
weighs z-scores. RLOO sums the weighted rewards, subtracts β·KL and a leave-one-out baseline (the
π_λ target); its optional ``normalize_advantages`` is batch-wide, like ``"batch"``. ``attach``
warns on the two settings that change λ's meaning and raises on β = 0 (π_λ is undefined without a
KL term) unless ``allow_no_kl=True``.

**Checkpoints.** ``on_save`` writes ``primal_dual.json`` (λ, the rule's state, the cost window)
atomically into each checkpoint folder ``{output_dir}/checkpoint-{step}``. ``attach`` wraps the
trainer's ``train`` so that ``train(resume_from_checkpoint=...)`` restores it first; a checkpoint
without the file raises ``FileNotFoundError``, and a run that resumed without the multiplier
state being restored for its step stops in ``on_train_begin`` instead of restarting λ.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from accelerate.utils import gather_object
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from constrained_align.config import DualConfig
from constrained_align.integrations.trl.dual import resolve_checkpoint
from constrained_align.integrations.trl.lagrangian_checks import (
    build_primal_dual,
    check_primal_dual,
    check_user_cost_weight,
    checked_reward_weights,
)
from constrained_align.integrations.trl.score_funcs import CostFunction, ScoreFunction, Scorer
from constrained_align.primal_dual import (
    PrimalDual,
    load_dual_state,
    save_dual_state,
)


class LagrangianCallback(TrainerCallback):
    """Drives λ for a stock GRPO/RLOO trainer: cost weight −λ, dual steps, logs, checkpoints.

    Args:
        cost: the cost scorer (``TextScorer`` or ``fn(prompts, responses, contexts)``); c > 0 is
            unsafe. :attr:`cost_fn` wraps it; pass that in the trainer's ``reward_funcs``.
        primal_dual: the PrimalDual, with one constraint named ``constraint``.
        dual: or a ``DualConfig`` to build one (``lambda_lr`` must be set).
        constraint: the constraint's name.
        cost_name: the cost function's name in TRL's logs (``rewards/<cost_name>/mean``).
        allow_no_kl: accept a trainer with β = 0 (no KL term, so π_λ is undefined).

    Raises:
        ValueError: on a missing or unsuitable multiplier.
    """

    def __init__(
        self,
        cost: Scorer,
        *,
        primal_dual: PrimalDual | None = None,
        dual: DualConfig | None = None,
        constraint: str = "cost",
        cost_name: str = "cost",
        allow_no_kl: bool = False,
    ):
        self.primal_dual = build_primal_dual(primal_dual, dual)
        check_primal_dual(self.primal_dual, constraint)
        self.constraint = constraint
        self.allow_no_kl = allow_no_kl
        self.cost_fn = cost if isinstance(cost, CostFunction) else CostFunction(cost, cost_name)
        self.trainer: Any = None
        self.cost_index: int | None = None
        self._pending: list[float] = []
        self._restored_step: int | None = None

    @property
    def lam(self) -> float:
        """Current λ."""
        return self.primal_dual.lam(self.constraint)

    # --- connecting -----------------------------------------------------------------------------

    def attach(self, trainer: Any) -> Any:
        """Connect to a GRPO/RLOO trainer whose ``reward_funcs`` contain :attr:`cost_fn`.

        Registers the callback, writes −λ into the cost's weight, routes the cost function's
        training batches to the dual and wraps ``trainer.train`` so that resuming from a
        checkpoint restores λ.

        Returns:
            The trainer, for chaining.

        Raises:
            RewardWeightsError: if ``trainer.reward_weights`` is missing or unexpected.
            ValueError: if already attached, if :attr:`cost_fn` is not among the trainer's
                reward functions, or if the trainer has β = 0 and ``allow_no_kl`` is off.
        """
        if self.trainer is not None:
            raise ValueError("this LagrangianCallback is already attached to a trainer")
        checked_reward_weights(trainer)
        matches = [i for i, f in enumerate(trainer.reward_funcs) if f is self.cost_fn]
        if len(matches) != 1:
            raise ValueError("pass callback.cost_fn exactly once in the trainer's reward_funcs")
        self._check_objective(trainer)
        check_user_cost_weight(trainer, matches[0])
        self.trainer, self.cost_index = trainer, matches[0]
        self.cost_fn.connect(self._pending.extend, lambda: bool(trainer.model.training))
        trainer.add_callback(self)
        self._wrap_train(trainer)
        self._write_weight()
        return trainer

    def _check_objective(self, trainer: Any) -> None:
        """Refuse β = 0; warn where TRL's normalisation changes what λ means (module doc)."""
        if getattr(trainer, "beta", None) == 0.0 and not self.allow_no_kl:
            raise ValueError(
                "the trainer has beta = 0 (no KL to π_ref), so the Lagrangian target π_λ is "
                "undefined (ALGORITHMS.md §3.3): set beta > 0 or pass allow_no_kl=True"
            )
        if getattr(trainer, "multi_objective_aggregation", None) == "normalize_then_sum":
            warnings.warn(
                "multi_objective_aggregation='normalize_then_sum' standardises reward and cost per "
                "group before weighting: λ then weighs z-scores, not cost units",
                stacklevel=3,
            )
        elif getattr(trainer, "scale_rewards", None) == "group":
            warnings.warn(
                "scale_rewards='group' divides each group's r − λc by its std: λ is not the "
                "multiplier of E[c] ≤ d; use scale_rewards='none' (ALGORITHMS.md §3.3)",
                stacklevel=3,
            )

    def _wrap_train(self, trainer: Any) -> None:
        """Make ``trainer.train(resume_from_checkpoint=...)`` restore λ before training."""
        train = trainer.train

        @functools.wraps(train)
        def train_restoring_dual(
            resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any
        ) -> Any:
            path = resolve_checkpoint(resume_from_checkpoint, trainer.args.output_dir)
            if path is not None:
                self.load(path)
            return train(path, *args, **kwargs)

        trainer.train = train_restoring_dual

    # --- state ----------------------------------------------------------------------------------

    def load(self, checkpoint: str | Path) -> int:
        """Restore the multiplier from ``checkpoint/primal_dual.json``; returns its global step.

        Raises:
            FileNotFoundError: if the checkpoint has no multiplier state.
        """
        step = load_dual_state(self.primal_dual, checkpoint)
        self._restored_step = step
        self._pending.clear()
        if self.trainer is not None:
            self._write_weight()
        return step

    def _write_weight(self) -> None:
        """``trainer.reward_weights[cost_index] = −λ`` (checked: TRL reads it at scoring time)."""
        weights = checked_reward_weights(self.trainer)
        weights[self.cost_index] = -self.lam

    def _generation_index(self, args: TrainingArguments, global_step: int) -> int:
        """Generation batches drawn in the first ``global_step`` optimizer steps."""
        steps = getattr(args, "steps_per_generation", None) or args.gradient_accumulation_steps
        per_generation = steps * getattr(self.trainer, "num_iterations", 1)
        return math.ceil(global_step * args.gradient_accumulation_steps / per_generation)

    def _gathered_costs(self) -> list[float]:
        """This step's recorded costs from every process (cleared locally)."""
        costs = list(self._pending)
        self._pending.clear()
        if self.trainer.accelerator.num_processes > 1:
            costs = [float(c) for c in gather_object(costs)]
        return costs

    def _log(self, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.trainer._metrics["train"][key].append(value)

    # --- callback events ------------------------------------------------------------------------

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Check the connection and that a resumed run restored λ; write the weight."""
        if self.trainer is None:
            raise RuntimeError("call LagrangianCallback.attach(trainer) before training")
        if state.global_step > 0 and self._restored_step != state.global_step:
            raise RuntimeError(
                f"training resumed at step {state.global_step}, but the multiplier state of that "
                f"step was not restored (restored: {self._restored_step}); resume with "
                "trainer.train(resume_from_checkpoint=...) on the attached trainer, or call "
                "callback.load(checkpoint) first, instead of restarting λ"
            )
        self._pending.clear()
        self._write_weight()

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Observe the step's raw costs, step the multiplier, write −λ and log the dual."""
        costs = self._gathered_costs()
        if costs:
            self.primal_dual.observe(self.constraint, costs)
            self.primal_dual.step(self._generation_index(args, state.global_step))
            self._write_weight()
        self._log(self.primal_dual.metrics())

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Write ``primal_dual.json`` into the checkpoint TRL has just saved."""
        if not args.should_save:
            return
        folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if not folder.is_dir():
            raise RuntimeError(f"checkpoint folder {folder} not found to save the multiplier in")
        save_dual_state(self.primal_dual, folder, state.global_step)


def make_lagrangian(
    trainer_cls: Callable[..., Any],
    model: Any,
    *,
    reward: Scorer,
    cost: Scorer,
    args: Any,
    primal_dual: PrimalDual | None = None,
    dual: DualConfig | None = None,
    allow_no_kl: bool = False,
    **trainer_kwargs: Any,
) -> tuple[Any, LagrangianCallback]:
    """Build a GRPO/RLOO trainer on ``[reward, cost]`` with an attached :class:`LagrangianCallback`.

    The reward keeps the weight of ``args.reward_weights`` (1 by default); the cost's weight is
    −λ from the start.

    Args:
        trainer_cls: ``trl.GRPOTrainer`` or ``trl.RLOOTrainer``.
        model: the policy (id, path or model).
        reward: reward scorer or a ready :class:`ScoreFunction`.
        cost: cost scorer or a ready :class:`CostFunction`.
        args: the trainer's config (``GRPOConfig`` / ``RLOOConfig``).
        primal_dual: the multiplier, or
        dual: a ``DualConfig`` to build it from.
        allow_no_kl: accept β = 0.
        **trainer_kwargs: the trainer's other arguments (``train_dataset``, ...).

    Returns:
        ``(trainer, callback)``.
    """
    callback = LagrangianCallback(cost, primal_dual=primal_dual, dual=dual, allow_no_kl=allow_no_kl)
    reward_fn = reward if isinstance(reward, ScoreFunction) else ScoreFunction(reward, "reward")
    trainer = trainer_cls(
        model, reward_funcs=[reward_fn, callback.cost_fn], args=args, **trainer_kwargs
    )
    return callback.attach(trainer), callback
