"""Backend-agnostic containers and the two interfaces every algorithm is written against.

An algorithm never sees a table or a tokenizer. It asks a :class:`PolicyBackend` to sample
responses, to give token and sequence log-probs (with masks), to make critics and give their
values and to take an optimizer step, and it asks a :class:`Scorer` for reward and cost.
Responses travel as an opaque ``Sequences`` handle that only the backend that made them (and
scorers built for it) can read: index pairs on the tabular testbed, token ids and masks on a
causal LM.

Shapes: ``B`` rows (responses or pairs), ``T`` response tokens (``T = 1`` on the testbed).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

Sequences = Any
"""An opaque batch of (prompt, response) sequences owned by one backend."""


class TrainingError(RuntimeError):
    """Training went wrong in a way no later step can repair: a non-finite loss, gradient,
    weight, output or multiplier, or a run that took no optimizer step. The message names the
    step and the quantity; the run stops at once."""


def check_finite(value: Tensor | float, what: str, step: int | str) -> None:
    """Raise :class:`TrainingError` unless every entry of ``value`` is finite (Python numbers
    are checked as float64), naming ``what`` and the ``step``."""
    tensor = value if isinstance(value, Tensor) else torch.tensor(float(value), dtype=torch.float64)
    if not bool(torch.isfinite(tensor).all()):
        shown = float(tensor) if tensor.numel() == 1 else "not finite"
        where = f"step {step}" if isinstance(step, int) else step
        raise TrainingError(f"{where}: {what} is {shown}; the run stopped")


Prompts = Any
"""An opaque batch of prompts owned by one backend (indices on the testbed, texts on an LM)."""


@dataclass
class LogProbs:
    """Per-token log-probs of a batch of responses.

    Attributes:
        token: ``(B, T)`` log π(y_t | x, y_<t); zero where ``mask`` is 0.
        mask: ``(B, T)`` float, 1 on response tokens (EOS included), 0 on prompt and padding.
    """

    token: Tensor
    mask: Tensor

    @property
    def sequence(self) -> Tensor:
        """``(B,)`` summed response log-prob log π(y | x)."""
        return (self.token * self.mask).sum(-1)


@dataclass
class Samples:
    """Responses drawn from a policy, with what the algorithms need to learn from them.

    Attributes:
        sequences: the backend's handle on the ``B`` (prompt, response) rows.
        group: ``(B,)`` long, index of each row's prompt in the prompt batch (GRPO groups).
        weight: ``(B,)`` probability weights. Sampled mode: ones. Population mode (the exact
            testbed enumerates every response): ρ_x · π(y | x), so weighted means are exact
            expectations.
        logprobs: per-token log-probs under the sampling policy (detached), or None.
        ref_logprobs: per-token log-probs under the frozen reference (detached), or None.
    """

    sequences: Sequences
    group: Tensor
    weight: Tensor
    logprobs: LogProbs | None = None
    ref_logprobs: LogProbs | None = None

    def __len__(self) -> int:
        return int(self.group.shape[0])


@dataclass
class PairBatch:
    """Preference pairs in the library's canonical (PKU-SafeRLHF) form.

    Label tensors are floats in [0, 1] so that exact population runs can carry soft labels
    (the probability that ``response_1`` wins) while sampled data carries hard 0/1 labels.

    Attributes:
        response_0: handle on the first response of each pair (B rows).
        response_1: handle on the second response of each pair (B rows).
        better_id: ``(B,)`` P(response_1 is more helpful); PKU's ``better_response_id``.
        safer_id: ``(B,)`` P(response_1 is safer); PKU's ``safer_response_id``.
        safe_0: ``(B,)`` 1 if response_0 is labelled safe, 0 if unsafe, NaN if unlabelled.
        safe_1: ``(B,)`` the same for response_1.
        weight: ``(B,)`` per-pair weight (ones for data; ρ_x μ(y)μ(y') in population mode).
        extra: algorithm-specific per-pair tensors (scores, cached log-probs).
    """

    response_0: Sequences
    response_1: Sequences
    better_id: Tensor
    safer_id: Tensor
    safe_0: Tensor
    safe_1: Tensor
    weight: Tensor
    extra: dict[str, Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.weight.shape[0])

    def with_extra(self, **tensors: Tensor) -> PairBatch:
        """A copy with more per-pair tensors in ``extra``."""
        return replace(self, extra={**self.extra, **tensors})

    def select(self, rows: Tensor) -> PairBatch:
        """The pairs at ``rows`` (a long index or bool mask); sequences via their ``index``."""
        if rows.dtype == torch.bool:
            rows = rows.nonzero(as_tuple=True)[0]
        return PairBatch(
            response_0=self.response_0.index(rows),
            response_1=self.response_1.index(rows),
            better_id=self.better_id[rows],
            safer_id=self.safer_id[rows],
            safe_0=self.safe_0[rows],
            safe_1=self.safe_1[rows],
            weight=self.weight[rows],
            extra={k: v[rows] for k, v in self.extra.items()},
        )


@runtime_checkable
class PolicyBackend(Protocol):
    """What an algorithm may ask of a policy. Implemented by the tabular and causal-LM backends."""

    def sample(
        self,
        prompts: Prompts,
        num_samples: int,
        *,
        reference: bool = False,
        seed: int | None = None,
    ) -> Samples:
        """Draw ``num_samples`` responses per prompt from the policy (or the reference)."""
        ...

    def logprobs(self, sequences: Sequences, *, reference: bool = False) -> LogProbs:
        """Token log-probs of the responses; differentiable unless ``reference``."""
        ...

    def pair_logprobs(
        self, response_0: Sequences, response_1: Sequences, *, reference: bool = False
    ) -> tuple[LogProbs, LogProbs]:
        """:meth:`logprobs` of both responses of preference pairs (a backend may share their
        prompts' computation)."""
        ...

    def add_critic(self, head: str) -> None:
        """Create the named critic ("reward" or "cost") and give it to the optimizer."""
        ...

    def values(self, sequences: Sequences, head: str) -> Tensor:
        """``(B, T)`` critic values V(s_t) of a critic made by :meth:`add_critic`."""
        ...

    def step(self, closure: Callable[..., Tensor], weight: Tensor | None = None) -> float:
        """One optimizer step; returns the loss. With ``weight`` (the ``(B,)`` weights of this
        process's rows of a batch), ``closure(rows)`` is the loss over the rows ``rows`` (None:
        every row), a weighted mean within them, and the backend may split the rows into
        micro-batches; without, ``closure()`` is the loss."""
        ...

    def fork(self) -> PolicyBackend:
        """A new policy initialised at the reference, sharing this backend's reference model."""
        ...

    def set_reference_to_policy(self) -> None:
        """Freeze the current policy as the new reference (SACPO stage 2)."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@runtime_checkable
class Scorer(Protocol):
    """Reward (helpfulness, higher is better) and cost (harm, c > 0 unsafe) of responses."""

    def reward(self, sequences: Sequences) -> Tensor:
        """``(B,)`` reward scores."""
        ...

    def cost(self, sequences: Sequences) -> Tensor:
        """``(B,)`` cost scores; c > 0 means unsafe."""
        ...

    def constraint(self, name: str, sequences: Sequences) -> Tensor:
        """``(B,)`` the cost of constraint ``name``: ``cost``, or a further one the run names
        (keys registered with ``multi_constraint`` ask for those)."""
        ...


def weighted_mean(values: Tensor, weight: Tensor | None = None) -> Tensor:
    """Σ w·v / Σ w (plain mean when ``weight`` is None).

    A zero total weight gives NaN, so an empty batch is never mistaken for a zero value.
    """
    if weight is None:
        return values.mean()
    weight = weight.to(values.dtype)
    return (values * weight).sum() / weight.sum()


@runtime_checkable
class Task(Protocol):
    """Where an algorithm's data comes from: prompts to sample on and preference pairs.

    Attributes:
        samples_per_prompt: on-policy responses drawn per prompt (G for GRPO, the on-policy
            cost estimate of c_dpo/caid).
        reference_samples: responses per prompt drawn from π_ref for the one-shot dual (M).
    """

    samples_per_prompt: int
    reference_samples: int

    def prompts(self, step: int) -> Prompts:
        """The prompt batch of an online step (or of an on-policy estimate)."""
        ...

    def pair_batches(self, epoch: int) -> list[PairBatch]:
        """The preference data of one epoch, as batches."""
        ...
