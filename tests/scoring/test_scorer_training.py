"""The score-model training loop learns, keeps its best epoch, and writes what it promises.

The data are synthetic but unambiguous, so a tiny encoder must learn them: helpful replies
answer, unhelpful ones decline; unsafe replies comply with a harmful request, safe ones refuse.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from constrained_align.config import ConfigError, ScorerConfig
from constrained_align.data.schema import pairs_to_dataset
from constrained_align.scoring import TextScorer
from constrained_align.scoring.training import ScorerData, length_grouped_batches, train_scorer

TOPICS = ["eggs", "tax", "rust", "bread", "chess", "mars", "knots", "tea", "jazz", "moss"]


def _row(prompt: str, r0: str, r1: str, **labels: object) -> dict[str, object]:
    base = {
        "better_response_id": None,
        "safer_response_id": None,
        "is_response_0_safe": None,
        "is_response_1_safe": None,
        "context": [],
        "source": "synthetic",
    }
    return {**base, "prompt": prompt, "response_0": r0, "response_1": r1, **labels}


def helpful_rows(n: int, seed: int) -> list[dict[str, object]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        topic = rng.choice(TOPICS)
        good = f"Sure! Here is a clear guide to {topic}: step one, step two, done."
        bad = "no"
        first = rng.random() < 0.5
        rows.append(
            _row(
                f"Tell me about {topic} #{i}",
                *((good, bad) if first else (bad, good)),
                better_response_id=0 if first else 1,
            )
        )
    return rows


def harm_rows(n: int, seed: int) -> list[dict[str, object]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        topic = rng.choice(TOPICS)
        unsafe = f"Sure, here is how to poison someone with {topic}: mix and serve."
        safe = "I can't help with hurting people."
        first_unsafe = rng.random() < 0.5
        r0, r1 = (unsafe, safe) if first_unsafe else (safe, unsafe)
        rows.append(
            _row(
                f"How do I hurt someone with {topic}? #{i}",
                r0,
                r1,
                safer_response_id=1 if first_unsafe else 0,
                is_response_0_safe=not first_unsafe,
                is_response_1_safe=first_unsafe,
            )
        )
    return rows


def _config(kind: str, backbone: str = "tiny-encoder") -> ScorerConfig:
    return ScorerConfig(
        kind=kind,
        backbone=backbone,
        max_length=96,
        epochs=3,
        batch_size=8,
        lr=3e-3,
        warmup_ratio=0.0,
        seed=0,
    )


@pytest.mark.parametrize("backbone", ["tiny-encoder", "tiny-decoder"])
def test_reward_model_learns_and_keeps_best_epoch(tmp_path, backbone: str) -> None:
    """Encoders (mean-pooled) and decoders (score at the EOS) both learn the preference."""
    data = ScorerData(pairs_to_dataset(helpful_rows(64, 0)), pairs_to_dataset(helpful_rows(24, 1)))
    summary = train_scorer(_config("reward", backbone), data, tmp_path, progress=False)
    assert summary["validation"]["accuracy"] >= 0.95
    assert summary["train_pairs"] == 64 and summary["steps"] == 3 * 8
    log = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    validations = [r for r in log if "validation" in r]
    assert [r["epoch"] for r in validations] == [1, 2, 3]
    best = max(validations, key=lambda r: r["validation"]["select"])
    assert summary["best_epoch"] == best["epoch"]
    # The saved model is the best epoch's: re-scoring the validation pairs reproduces it.
    scorer = TextScorer.from_pretrained(tmp_path / "model", progress=False)
    v = data.validation
    chosen = [r[f"response_{r['better_response_id']}"] for r in v]
    rejected = [r[f"response_{1 - r['better_response_id']}"] for r in v]
    acc = float(
        (scorer.score(v["prompt"], chosen) > scorer.score(v["prompt"], rejected)).float().mean()
    )
    assert acc == pytest.approx(best["validation"]["accuracy"])
    assert "kind: reward" in (tmp_path / "config.yaml").read_text()


def test_cost_model_learns_ranking_and_the_zero_boundary(tmp_path) -> None:
    data = ScorerData(pairs_to_dataset(harm_rows(64, 0)), pairs_to_dataset(harm_rows(24, 1)))
    summary = train_scorer(_config("cost"), data, tmp_path, progress=False)
    val = summary["validation"]
    assert val["ranking_accuracy"] >= 0.95
    assert val["classification"]["accuracy"] >= 0.95
    scorer = TextScorer.from_pretrained(tmp_path / "model", progress=False)
    c = scorer.score(
        ["How do I hurt someone with tea?"] * 2,
        [
            "Sure, here is how to poison someone with tea: mix and serve.",
            "I can't help with hurting people.",
        ],
    )
    assert c[0] > 0 > c[1]


def test_length_grouped_batches_cover_every_row_once() -> None:
    lengths = np.array([5, 1, 9, 3, 7, 2, 8, 4, 6, 10, 11])
    batches = list(length_grouped_batches(lengths, 3, np.random.default_rng(0), group=2))
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(11))
    assert all(len(b) <= 3 for b in batches)
    # Inside a chunk of group × batch_size rows the batches are sorted by length.
    assert all(np.all(np.diff(lengths[b]) >= 0) for b in batches)


def test_without_validation_pairs_the_last_epoch_is_kept(tmp_path) -> None:
    """Validation rows with no helpfulness pairs give NaN scores: no epoch 'wins' by NaN."""
    data = ScorerData(pairs_to_dataset(helpful_rows(16, 0)), pairs_to_dataset(harm_rows(4, 1)))
    config = _config("reward")
    config.epochs = 2
    summary = train_scorer(config, data, tmp_path, progress=False)
    assert summary["best_epoch"] == 2
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert all("NaN" not in line for line in lines)  # strict JSON: NaN is written as null


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("epochs", -1, "epochs must be at least 0"),
        ("validation_fraction", 1.0, "validation_fraction must be in [0, 1)"),
        ("batch_size", 0, "batch_size must be at least 1"),
    ],
)
def test_unusable_settings_are_config_errors(field: str, value: object, message: str) -> None:
    config = _config("cost")
    setattr(config, field, value)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(")", r"\)")):
        config.check()
