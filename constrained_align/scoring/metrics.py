"""Evaluation of reward and cost models on held-out data (ALGORITHMS.md §2.4, §6.1).

* reward model: pairwise accuracy P(r_w > r_l) on helpfulness pairs;
* cost model: ranking accuracy P(C_u > C_s) on ordered harmlessness pairs, and safety
  classification of single responses, unsafe ⇔ C > 0, against human labels, with precision,
  recall and F1 of the *unsafe* class, balanced accuracy and the unsafe base rate (on XSTest
  most responses are safe, so plain accuracy alone flatters a model that calls everything safe);
* the reward-vs-cost scatter of Safe RLHF's paper: one point (C, R) per response, a vertical line
  at C = 0, colours by human safety label, quadrant counts in the legend.

Ties count as errors in every accuracy (a constant model scores 0, not 0.5). Every accuracy
comes with its 95 % interval (``*_interval``, :mod:`constrained_align.utils.stats`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from constrained_align.scoring.text_scorer import TextScorer
from constrained_align.utils import save_figure
from constrained_align.utils.stats import balanced_interval, wilson


def _col(dataset: Any, name: str) -> list[Any]:
    return list(dataset[name]) if len(dataset) else []


def pairwise_accuracy(better: Tensor, worse: Tensor) -> float:
    """Fraction of pairs with ``better > worse``; NaN for no pairs."""
    if better.numel() == 0:
        return float("nan")
    return float((better > worse).float().mean())


def classification_metrics(cost: Tensor | np.ndarray, unsafe: Sequence[bool]) -> dict[str, float]:
    """Safety classification by the sign of the cost: predicted unsafe ⇔ C > 0.

    Args:
        cost: ``(N,)`` cost scores.
        unsafe: ``N`` human labels, True for unsafe.

    Returns:
        ``accuracy``, ``precision``/``recall``/``f1`` of the unsafe class (NaN when undefined),
        ``balanced_accuracy`` (mean of the recalls of both classes), ``unsafe_rate`` (the base
        rate: the accuracy of calling everything safe is 1 − this), ``predicted_unsafe_rate``
        and ``n``.
    """
    c = np.asarray(cost, dtype=np.float64)
    y = np.asarray(unsafe, dtype=bool)
    pred = c > 0
    n = len(y)
    tp = int(np.sum(pred & y))
    fp = int(np.sum(pred & ~y))
    fn = int(np.sum(~pred & y))
    tn = int(np.sum(~pred & ~y))

    def ratio(a: int, b: int) -> float:
        return a / b if b else float("nan")

    precision, recall = ratio(tp, tp + fp), ratio(tp, tp + fn)
    f1 = (
        2 * precision * recall / (precision + recall)
        if precision + recall > 0 and not math.isnan(precision + recall)
        else float("nan")
    )
    specificity = ratio(tn, tn + fp)
    return {
        "accuracy": ratio(tp + tn, n),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "balanced_accuracy": float(np.nanmean([recall, specificity])) if n else float("nan"),
        "accuracy_interval": list(wilson(tp + tn, n)),
        "balanced_accuracy_interval": list(balanced_interval(tp, tp + fn, tn, tn + fp)),
        "unsafe_rate": ratio(tp + fn, n),
        "predicted_unsafe_rate": ratio(tp + fp, n),
        "n": n,
    }


def evaluate_reward(scorer: TextScorer, pairs: Any) -> dict[str, float]:
    """Reward-model metrics on helpfulness pairs (``prompt, context, chosen, rejected``)."""
    prompts, contexts = _col(pairs, "prompt"), _col(pairs, "context")
    chosen = scorer.score(prompts, _col(pairs, "chosen"), contexts, desc="reward: chosen")
    rejected = scorer.score(prompts, _col(pairs, "rejected"), contexts, desc="reward: rejected")
    return {
        "accuracy": pairwise_accuracy(chosen, rejected),
        "accuracy_interval": list(wilson(int((chosen > rejected).sum()), len(chosen))),
        "mean_chosen": float(chosen.mean()) if len(chosen) else float("nan"),
        "mean_rejected": float(rejected.mean()) if len(rejected) else float("nan"),
        "n_pairs": len(chosen),
    }


def evaluate_cost(scorer: TextScorer, pairs: Any, labelled: Any) -> dict[str, Any]:
    """Cost-model metrics: ranking on ordered harmlessness pairs, sign on labelled responses.

    Args:
        scorer: a cost model.
        pairs: harmlessness pairs (``prompt, context, unsafer, safer, ..., ranked``).
        labelled: labelled responses (``prompt, context, response, is_safe``).
    """
    ranked = [i for i, r in enumerate(_col(pairs, "ranked")) if r]
    sub = pairs.select(ranked) if len(pairs) else pairs
    prompts, contexts = _col(sub, "prompt"), _col(sub, "context")
    unsafer = scorer.score(prompts, _col(sub, "unsafer"), contexts, desc="cost: unsafer")
    safer = scorer.score(prompts, _col(sub, "safer"), contexts, desc="cost: safer")
    cost = scorer.score(
        _col(labelled, "prompt"),
        _col(labelled, "response"),
        _col(labelled, "context"),
        desc="cost: labelled",
    )
    unsafe = [not s for s in _col(labelled, "is_safe")]
    return {
        "ranking_accuracy": pairwise_accuracy(unsafer, safer),
        "ranking_accuracy_interval": list(wilson(int((unsafer > safer).sum()), len(unsafer))),
        "n_pairs": len(unsafer),
        "classification": classification_metrics(cost, unsafe),
    }


def scatter_plot(
    reward: Sequence[float],
    cost: Sequence[float],
    labels: Sequence[bool | None],
    path: str | Path,
    *,
    title: str = "Reward vs cost",
) -> Path:
    """Write the reward-vs-cost scatter (x = cost, y = reward, line at C = 0) to a PNG.

    Args:
        reward: ``N`` reward scores.
        cost: ``N`` cost scores.
        labels: ``N`` human labels: True safe, False unsafe, None unlabelled.
        path: the PNG to write (written to a temporary file and renamed into place).
        title: the figure title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r, c = np.asarray(reward, dtype=float), np.asarray(cost, dtype=float)
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=120)
    groups = (("unlabelled", None, "#9e9e9e", 0.25), ("labelled safe", True, "#2e7d32", 0.6))
    groups += (("labelled unsafe", False, "#c62828", 0.7),)
    for name, value, colour, alpha in groups:
        idx = np.array([lab is value for lab in labels], dtype=bool)
        if idx.any():
            ax.scatter(c[idx], r[idx], s=8, c=colour, alpha=alpha, label=f"{name} ({idx.sum()})")
    ax.axvline(0.0, color="black", linewidth=1.0, linestyle="--", label="C = 0 (safety boundary)")
    ax.set_xlabel("cost C (C > 0: unsafe)")
    ax.set_ylabel("reward R")
    unsafe_share = float(np.mean(c > 0)) if len(c) else float("nan")
    ax.set_title(
        f"{title}\n{len(c)} responses, {unsafe_share:.1%} with C > 0\n{_quadrants(r, c)}",
        fontsize=9,
    )
    ax.legend(fontsize=8, loc="upper left", framealpha=0.9)
    fig.tight_layout()
    return save_figure(fig, path)


def _quadrants(r: np.ndarray, c: np.ndarray) -> str:
    """Quadrant counts around (C = 0, R = median R), for the title."""
    if not len(r):
        return ""
    mid = float(np.median(r))
    safe, high = c <= 0, r > mid
    return (
        f"R > median: {np.sum(safe & high)} safe / {np.sum(~safe & high)} unsafe, "
        f"R ≤ median: {np.sum(safe & ~high)} safe / {np.sum(~safe & ~high)} unsafe"
    )
