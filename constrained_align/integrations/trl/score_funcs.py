"""Our scorers as TRL reward functions (``GRPOTrainer`` / ``RLOOTrainer`` ``reward_funcs``).

TRL calls a reward function as ``f(prompts=..., completions=..., completion_ids=..., **kwargs)``
with one entry per completion and expects one float per completion (ALGORITHMS.md §7). Prompts
and completions are plain strings for a "standard" dataset, or message lists for a
"conversational" one::

    prompt      [{"role": "system", ...}, {"role": "user", ...}, ..., {"role": "user", ...}]
    completion  [{"role": "assistant", "content": "..."}]

:class:`ScoreFunction` turns either form into what :class:`~constrained_align.models.TextScorer`
reads — the final user turn as ``prompt``, the earlier turns as ``contexts`` (None when every
prompt is single-turn) and the reply text — and calls the scorer. A scorer is a ``TextScorer``
(anything with ``score(prompts, responses, contexts)``) or any callable
``fn(prompts, responses, contexts) -> Sequence[float] | Tensor``.

:class:`CostFunction` also hands the raw costs of every training batch to a sink (the
:class:`~constrained_align.integrations.trl.lagrangian.LagrangianCallback` buffer that feeds the
dual) and logs their mean through TRL's ``log_metric`` kwarg as ``constraint/batch_cost``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import torch

Message = Mapping[str, Any]
Context = list[dict[str, str]]

#: Metric a :class:`CostFunction` logs through ``log_metric``: the mean raw cost of the batch.
BATCH_COST_KEY = "constraint/batch_cost"


class SupportsScore(Protocol):
    """Anything with ``TextScorer.score``'s signature."""

    def score(
        self,
        prompts: Sequence[str],
        responses: Sequence[str],
        contexts: Sequence[Context] | None = None,
    ) -> Any:
        """``(N,)`` scores of ``responses[i]`` to ``prompts[i]``."""


TextScoreFn = Callable[[list[str], list[str], list[Context] | None], Any]
Scorer = SupportsScore | TextScoreFn


def message_text(content: Any) -> str:
    """The text of a message's ``content``: a string, or the ``text`` parts of content blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        return "".join(
            part.get("text", "") if isinstance(part, Mapping) else str(part) for part in content
        )
    raise TypeError(f"unsupported message content of type {type(content).__name__}")


def split_prompt(prompt: str | Sequence[Message]) -> tuple[str, Context]:
    """``(final user turn, earlier turns)`` of a string or conversational prompt.

    Raises:
        ValueError: if a conversational prompt does not end with a user turn.
    """
    if isinstance(prompt, str):
        return prompt, []
    messages = [{"role": str(m["role"]), "content": message_text(m["content"])} for m in prompt]
    if not messages or messages[-1]["role"] != "user":
        roles = [m["role"] for m in messages]
        raise ValueError(f"a conversational prompt must end with a user turn; got roles {roles}")
    return messages[-1]["content"], messages[:-1]


def completion_text(completion: str | Sequence[Message]) -> str:
    """The reply text of a string or conversational completion (assistant turns, joined)."""
    if isinstance(completion, str):
        return completion
    parts = [message_text(m["content"]) for m in completion if m.get("role") == "assistant"]
    return "\n\n".join(parts)


def to_scorer_inputs(
    prompts: Sequence[Any], completions: Sequence[Any]
) -> tuple[list[str], list[str], list[Context] | None]:
    """``(prompts, responses, contexts)`` for ``TextScorer.score``; contexts None if single-turn."""
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    split = [split_prompt(p) for p in prompts]
    texts = [text for text, _ in split]
    contexts = [context for _, context in split]
    responses = [completion_text(c) for c in completions]
    return texts, responses, contexts if any(contexts) else None


def _as_floats(scores: Any, expected: int, name: str) -> list[float]:
    """Scores (tensor, array or sequence) as ``expected`` Python floats."""
    if isinstance(scores, torch.Tensor):
        values = scores.detach().to("cpu", torch.float64).reshape(-1).tolist()
    else:
        values = [float(s) for s in scores]
    if len(values) != expected:
        raise ValueError(
            f"scorer {name!r} returned {len(values)} scores for {expected} completions"
        )
    return values


class ScoreFunction:
    """A TRL reward function that scores completions with one of our scorers.

    Args:
        scorer: a ``TextScorer`` (or anything with its ``score``), or a callable
            ``fn(prompts, responses, contexts) -> scores``.
        name: the function's ``__name__``; TRL logs ``rewards/<name>/mean`` and ``/std``.
    """

    def __init__(self, scorer: Scorer, name: str = "reward"):
        score = getattr(scorer, "score", None)
        if not callable(score) and not callable(scorer):
            raise TypeError(f"scorer must have .score() or be callable, got {type(scorer)}")
        self.scorer = scorer
        self._score: TextScoreFn = score if callable(score) else scorer  # type: ignore[assignment]
        self.__name__ = name

    def scores(self, prompts: Sequence[Any], completions: Sequence[Any]) -> list[float]:
        """One float per completion, in order."""
        texts, responses, contexts = to_scorer_inputs(prompts, completions)
        return _as_floats(self._score(texts, responses, contexts), len(texts), self.__name__)

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any
    ) -> list[float]:
        """TRL's reward-function signature; extra kwargs (dataset columns, ...) are ignored."""
        return self.scores(prompts, completions)


class CostFunction(ScoreFunction):
    """A :class:`ScoreFunction` for the cost that also records each training batch's raw costs.

    TRL multiplies its output by the cost's reward weight (−λ, set by the callback); the values
    recorded and logged here are the raw costs c, as the dual needs (ALGORITHMS.md §3.3 step 5).

    Args:
        scorer: as for :class:`ScoreFunction`.
        name: the function's ``__name__`` (TRL logs ``rewards/<name>/mean``).
    """

    def __init__(self, scorer: Scorer, name: str = "cost"):
        super().__init__(scorer, name)
        self.sink: Callable[[list[float]], None] | None = None
        self.recording: Callable[[], bool] = lambda: True

    def connect(self, sink: Callable[[list[float]], None], recording: Callable[[], bool]) -> None:
        """Send the costs of batches scored while ``recording()`` is true to ``sink``."""
        self.sink = sink
        self.recording = recording

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any
    ) -> list[float]:
        """Score, hand the raw costs to the sink (training batches only) and log their mean."""
        costs = self.scores(prompts, completions)
        if self.sink is not None and self.recording():
            self.sink(costs)
        log_metric = kwargs.get("log_metric")
        if callable(log_metric) and costs:
            log_metric(BATCH_COST_KEY, sum(costs) / len(costs))
        return costs
