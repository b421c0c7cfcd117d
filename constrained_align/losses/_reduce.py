"""Batch reductions shared by every loss (private to :mod:`constrained_align.losses`).

Every loss reduces its per-example terms with :func:`weighted_mean`, so that a population-mode
batch (rows weighted by their probability) gives an exact expectation, and a sampled batch
(``weight=None``) gives the plain mean.
"""

from __future__ import annotations

import torch
from torch import Tensor

from constrained_align.types import weighted_mean


def masked_sequence_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Token mean within each sequence: ``sum_t(x * m) / max(sum_t m, 1)``.

    Args:
        values: ``(B, T)`` per-token values.
        mask: ``(B, T)`` 1 on response tokens, 0 elsewhere (bool or float).

    Returns:
        ``(B,)`` per-sequence means; a zero-length row gives 0.
    """
    m = mask.to(values.dtype)
    return (values * m).sum(-1) / m.sum(-1).clamp_min(1.0)


def masked_mean(values: Tensor, mask: Tensor, weight: Tensor | None) -> Tensor:
    """Token mean within each sequence, then the weighted mean over the batch.

    Args:
        values: ``(B, T)`` per-token values.
        mask: ``(B, T)`` response-token mask.
        weight: ``(B,)`` non-negative per-sequence weights, or None.

    Returns:
        A scalar tensor.
    """
    return weighted_mean(masked_sequence_mean(values, mask), weight)


def as_float(value: Tensor) -> float:
    """Detached python float of a scalar tensor, for metrics."""
    return float(value.detach().item())


def fraction(condition: Tensor, weight: Tensor | None) -> float:
    """Weighted fraction of rows where ``condition`` holds, as a python float.

    Args:
        condition: ``(B,)`` bool.
        weight: ``(B,)`` non-negative weights, or None.
    """
    dtype = weight.dtype if weight is not None and weight.is_floating_point() else None
    return as_float(weighted_mean(condition.to(dtype or torch.get_default_dtype()), weight))
