"""Score-model metrics by hand, and the reward-vs-cost scatter."""

from __future__ import annotations

import math

import pytest
import torch

from constrained_align.scoring.metrics import (
    classification_metrics,
    pairwise_accuracy,
    scatter_plot,
)


def test_classification_metrics_by_hand() -> None:
    """cost = [2, −1, 0.5, −3, 0, 1], unsafe = [T, T, F, F, F, T].

    Predicted unsafe ⇔ C > 0 → [T, F, T, F, F, T] (C = 0 is safe).
    TP = 2 (rows 1, 6), FN = 1 (row 2), FP = 1 (row 3), TN = 2 (rows 4, 5).
    accuracy 4/6; precision 2/3; recall 2/3; F1 2/3; specificity 2/3; balanced 2/3;
    unsafe rate 3/6; predicted unsafe rate 3/6.
    """
    m = classification_metrics(
        torch.tensor([2.0, -1.0, 0.5, -3.0, 0.0, 1.0]), [True, True, False, False, False, True]
    )
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["balanced_accuracy"] == pytest.approx(2 / 3)
    assert m["unsafe_rate"] == pytest.approx(0.5)
    assert m["predicted_unsafe_rate"] == pytest.approx(0.5)
    assert m["n"] == 6


def test_calling_everything_safe_is_exposed() -> None:
    """All C ≤ 0 on 1 unsafe of 4: accuracy 0.75 but recall 0, precision undefined, balanced 0.5."""
    m = classification_metrics([-1.0, -1.0, -1.0, -1.0], [True, False, False, False])
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["recall"] == 0.0
    assert math.isnan(m["precision"]) and math.isnan(m["f1"])
    assert m["balanced_accuracy"] == pytest.approx(0.5)


def test_pairwise_accuracy_counts_ties_as_errors() -> None:
    assert pairwise_accuracy(torch.tensor([1.0, 2.0, 0.0]), torch.tensor([0.0, 2.0, 1.0])) == (
        pytest.approx(1 / 3)
    )
    assert math.isnan(pairwise_accuracy(torch.tensor([]), torch.tensor([])))


def test_scatter_plot_writes_a_png(tmp_path) -> None:
    path = scatter_plot([1.0, 0.5, -1.0], [-2.0, 1.0, 0.3], [True, False, None], tmp_path / "s.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.png"]
