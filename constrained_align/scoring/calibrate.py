"""The cost model's safety boundary: c = 0 placed where it best separates safe from unsafe.

Ranking losses fix a cost model's scores only up to a shift, and the sign terms of the cost
loss (ALGORITHMS.md §2.3) pull the boundary towards zero only as hard as their weight allows.
After training, :func:`calibrate_cost` scores labelled held-out responses, picks the threshold
t with the best balanced accuracy (the mean of the recalls of the safe and the unsafe class —
plain accuracy would favour calling everything safe, as most responses are), and subtracts t
from the head's bias, so "unsafe ⇔ c > 0" holds at that threshold. The threshold, its
balanced accuracy and the number of responses are recorded in the model's ``score_model.json``
(``calibration``). Thresholds are the midpoints between consecutive distinct scores; among
equally good ones the one nearest the current boundary (t = 0) wins, so a model that already
separates well moves least.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset

from constrained_align.data import labelled_responses
from constrained_align.scoring.metrics import classification_metrics
from constrained_align.scoring.score_model import ScoreModel
from constrained_align.scoring.text_scorer import TextScorer


def best_threshold(cost: Sequence[float], unsafe: Sequence[bool]) -> tuple[float, float]:
    """``(t, balanced accuracy)`` of the rule "unsafe ⇔ cost > t" that classifies best.

    Raises:
        ValueError: the labels hold only one class (no threshold is better than another).
    """
    c = np.asarray(cost, dtype=np.float64)
    y = np.asarray(unsafe, dtype=bool)
    if y.all() or not y.any():
        raise ValueError("calibration needs both safe and unsafe labelled responses")
    values = np.unique(c)
    candidates = np.concatenate([[values[0] - 1.0], (values[:-1] + values[1:]) / 2])
    pred = c[None, :] > candidates[:, None]  # (K, N)
    recall_unsafe = (pred & y).sum(1) / y.sum()
    recall_safe = (~pred & ~y).sum(1) / (~y).sum()
    balanced = (recall_unsafe + recall_safe) / 2
    best = np.flatnonzero(np.isclose(balanced, balanced.max(), rtol=0, atol=1e-12))
    pick = best[np.argmin(np.abs(candidates[best]))]
    return float(candidates[pick]), float(balanced[pick])


def calibrate_cost(model: ScoreModel, cost: Sequence[float], unsafe: Sequence[bool]) -> ScoreModel:
    """Shift ``model``'s head bias so its boundary sits at the best threshold on ``cost``
    (the model's scores of labelled responses) and record it in ``model.config.calibration``.

    Raises:
        ValueError: not a cost model, or the labels hold only one class.
    """
    if model.config.kind != "cost":
        raise ValueError("only a cost model has a safety boundary to calibrate")
    threshold, balanced = best_threshold(cost, unsafe)
    with torch.no_grad():
        model.head.bias -= threshold
    after = classification_metrics(np.asarray(cost) - threshold, list(unsafe))
    model.config.calibration = {
        "threshold": threshold,
        "balanced_accuracy": balanced,
        "accuracy": after["accuracy"],
        "n": float(len(unsafe)),
        "n_unsafe": float(sum(bool(u) for u in unsafe)),
    }
    return model


def calibrate_saved(
    folder: Path, validation: Dataset, batch_size: int, progress: bool
) -> dict[str, float] | None:
    """Calibrate the cost model saved in ``folder`` on the labelled responses of
    ``validation`` rows and save it again; None, with a warning, when they hold one class."""
    model = ScoreModel.from_pretrained(folder)
    labelled = labelled_responses(validation)
    scorer = TextScorer(model, batch_size=batch_size, progress=progress)
    cost = scorer.score(
        labelled["prompt"], labelled["response"], labelled["context"], desc="calibration"
    )
    try:
        calibrate_cost(model, cost.tolist(), [not s for s in labelled["is_safe"]])
    except ValueError as err:
        warnings.warn(f"cost model not calibrated: {err}", stacklevel=2)
        return None
    model.save_pretrained(folder)
    return model.config.calibration
