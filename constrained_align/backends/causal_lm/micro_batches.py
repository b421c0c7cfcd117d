"""A policy step's rows split into the engine's micro-batches, each with its share of the loss.

Each micro-batch's loss is a weighted mean over its own rows; multiplied by its share (its
rows' weight over the whole batch's weight on every process) the micro-batch losses add up to
the whole batch's weighted mean, so a step is the same whatever the number of processes and
micro-batches (:meth:`CausalLMPolicy.step <constrained_align.backends.causal_lm.policy.
CausalLMPolicy.step>`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from constrained_align.config import ConfigError
from constrained_align.utils.distributed import Reductions


def micro_batches(
    closure: Callable[..., Tensor], weight: Tensor | None, parts: int, reductions: Reductions
) -> list[tuple[Callable[[], Tensor], float]]:
    """The step's micro-batch closures, each with its share of the loss over processes.

    Args:
        closure: with ``weight``, ``closure(rows)`` is the weighted mean loss over the batch
            rows ``rows`` (None: all of them); without, ``closure()`` is this process's loss.
        weight: ``(B,)`` weights of this process's rows, or None (the processes count equally
            and the loss cannot be split).
        parts: the engine's ``gradient_accumulation_steps``.
        reductions: the cross-process sums.
    """
    if weight is None:
        if parts > 1:
            raise ConfigError(
                "this step's loss cannot be split into micro-batches: set "
                "engine.gradient_accumulation_steps to 1"
            )
        return [(closure, 1.0 / reductions.world_size)]
    weight = weight.detach().double().cpu()
    total = float(reductions.gather(weight.sum().reshape(1)).sum())
    if parts == 1:
        return [(lambda: closure(None), float(weight.sum()) / total)]
    # A micro-batch left without rows (fewer rows than micro-batches) runs the first row at
    # share 0: every micro-step then has a backward, as the engine's all-reduce needs.
    first = torch.zeros(1, dtype=torch.long)
    return [
        (
            lambda rows=rows: closure(rows if len(rows) else first),
            float(weight[rows].sum()) / total,
        )
        for rows in torch.arange(len(weight)).tensor_split(parts)
    ]
