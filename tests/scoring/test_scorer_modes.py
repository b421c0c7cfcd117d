"""``train-scorer --mode frozen|lora`` and the calibrated safety boundary.

A frozen model trains its head on features computed once (and read back from disk by a second
run), saves only that head, and reloads over its named backbone to the same scores; a LoRA
model saves adapters and head; the boundary's threshold is checked against one worked out by
hand, and a trained cost model records it.
"""

from __future__ import annotations

import json

import pytest
import torch

from constrained_align.config import ConfigError, ScorerConfig
from constrained_align.data.schema import pairs_to_dataset
from constrained_align.scoring import ScoreModel, TextScorer
from constrained_align.scoring.calibrate import best_threshold, calibrate_cost
from constrained_align.scoring.modes import HEAD_NAME
from constrained_align.scoring.training import ScorerData, train_scorer
from tests.scoring.test_scorer_training import harm_rows, helpful_rows


@pytest.fixture(autouse=True)
def _user_cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CONSTRAINED_ALIGN_CACHE", str(tmp_path / "user-cache"))


def _config(kind: str, mode: str) -> ScorerConfig:
    return ScorerConfig(
        kind=kind, backbone="tiny-encoder", mode=mode, max_length=96, batch_size=8, seed=0
    )


def _rescore(folder, rows) -> torch.Tensor:
    scorer = TextScorer.from_pretrained(folder, progress=False)
    return scorer.score(rows["prompt"], rows["response_0"], rows["context"])


def test_frozen_head_learns_saves_only_the_head_and_reuses_features(tmp_path, monkeypatch) -> None:
    calls: list[int] = []
    original = ScoreModel.pooled
    monkeypatch.setattr(
        ScoreModel, "pooled", lambda self, *a, **k: calls.append(1) or original(self, *a, **k)
    )
    data = ScorerData(pairs_to_dataset(helpful_rows(64, 0)), pairs_to_dataset(helpful_rows(24, 1)))
    summary = train_scorer(_config("reward", "frozen"), data, tmp_path / "a", progress=False)
    assert 0 < len(calls) <= 4  # the features of 176 inputs, in a few batches, once
    assert summary["mode"] == "frozen" and summary["epochs"] == 60
    assert summary["validation"]["accuracy"] >= 0.95
    folder = tmp_path / "a" / "model"
    assert sorted(p.name for p in folder.iterdir()) == [HEAD_NAME, "score_model.json"]
    saved = json.loads((folder / "score_model.json").read_text())
    assert saved["mode"] == "frozen" and saved["backbone"] == "tiny-encoder"
    assert len(saved["backbone_sha"]) == 64
    # A second run on the same data reads every feature from disk: the backbone never runs,
    # and the same seed trains the same head.
    calls.clear()
    train_scorer(_config("reward", "frozen"), data, tmp_path / "b", progress=False)
    assert calls == []
    monkeypatch.undo()
    # Reloaded over its named backbone, each scores the validation pairs as it was trained to.
    first = _rescore(folder, data.validation)
    assert torch.allclose(_rescore(tmp_path / "b" / "model", data.validation), first, atol=1e-5)
    v = data.validation
    chosen = [r[f"response_{r['better_response_id']}"] for r in v]
    rejected = [r[f"response_{1 - r['better_response_id']}"] for r in v]
    scorer = TextScorer.from_pretrained(folder, progress=False)
    accuracy = (scorer.score(v["prompt"], chosen) > scorer.score(v["prompt"], rejected)).float()
    assert float(accuracy.mean()) == pytest.approx(summary["validation"]["accuracy"])


def test_frozen_model_refuses_other_backbone_weights(tmp_path) -> None:
    data = ScorerData(pairs_to_dataset(helpful_rows(16, 0)), pairs_to_dataset(helpful_rows(8, 1)))
    config = _config("reward", "frozen")
    config.epochs = 1
    train_scorer(config, data, tmp_path, progress=False)
    path = tmp_path / "model" / "score_model.json"
    saved = json.loads(path.read_text())
    path.write_text(json.dumps({**saved, "backbone_sha": "0" * 64}))
    with pytest.raises(ConfigError, match="trained on other 'tiny-encoder' weights"):
        ScoreModel.from_pretrained(tmp_path / "model")


def test_lora_mode_saves_adapters_and_head(tmp_path) -> None:
    data = ScorerData(pairs_to_dataset(helpful_rows(64, 0)), pairs_to_dataset(helpful_rows(24, 1)))
    config = _config("reward", "lora")
    config.lr = 1e-2
    summary = train_scorer(config, data, tmp_path, progress=False)
    assert summary["validation"]["accuracy"] >= 0.9
    model = ScoreModel.from_pretrained(tmp_path / "model")
    names = [n for n, _ in model.named_parameters() if ".lora_" in n]
    assert names and all(any(t in n for t in ("query", "key", "value")) for n in names)
    # LoRA's B matrices start at zero: non-zero ones were trained and saved.
    lora_b = [p for n, p in model.named_parameters() if ".lora_B." in n]
    assert lora_b and all(bool(p.abs().sum() > 0) for p in lora_b)
    assert (tmp_path / "model" / HEAD_NAME).stat().st_size < 200_000


def test_best_threshold_by_hand() -> None:
    """Scores −2, −1, 0.5, 1, 3 with labels safe, safe, unsafe, safe, unsafe. Thresholds −1.5,
    −0.25, 0.75, 2 give balanced accuracies (1 + 1/3)/2, (1 + 2/3)/2, (1/2 + 2/3)/2 and
    (1/2 + 1)/2; the best is −0.25 at 5/6."""
    t, balanced = best_threshold([-2, -1, 0.5, 1, 3], [False, False, True, False, True])
    assert t == pytest.approx(-0.25) and balanced == pytest.approx(5 / 6)
    with pytest.raises(ValueError, match="both safe and unsafe"):
        best_threshold([1.0, 2.0], [True, True])


def test_calibration_moves_the_bias_and_records_it() -> None:
    model = ScoreModel.from_backbone("tiny-encoder", "cost", max_length=64)
    bias = float(model.head.bias.detach())
    calibrate_cost(model, [-2, -1, 0.5, 1, 3], [False, False, True, False, True])
    assert float(model.head.bias.detach()) == pytest.approx(bias + 0.25)
    record = model.config.calibration
    assert record["threshold"] == pytest.approx(-0.25) and record["n"] == 5
    assert record["balanced_accuracy"] == pytest.approx(5 / 6)
    with pytest.raises(ValueError, match="only a cost model"):
        calibrate_cost(
            ScoreModel.from_backbone("tiny-encoder", "reward"), [0.0, 1.0], [False, True]
        )


def test_trained_cost_model_is_calibrated_on_validation(tmp_path) -> None:
    data = ScorerData(pairs_to_dataset(harm_rows(64, 0)), pairs_to_dataset(harm_rows(24, 1)))
    summary = train_scorer(_config("cost", "frozen"), data, tmp_path, progress=False)
    record = summary["calibration"]
    assert record["n"] == 48 and record["n_unsafe"] == 24 and record["balanced_accuracy"] == 1.0
    saved = json.loads((tmp_path / "model" / "score_model.json").read_text())
    assert saved["calibration"] == record
    scores = _rescore(tmp_path / "model", data.validation)
    unsafe = torch.tensor([not s for s in data.validation["is_response_0_safe"]])
    assert torch.equal(scores > 0, unsafe)


def test_weights_digest_ignores_names_and_order_but_not_values() -> None:
    from torch import nn

    from constrained_align.scoring.modes import weights_digest

    torch.manual_seed(0)
    a, b = nn.Linear(3, 2), nn.Linear(2, 3)
    first = nn.Sequential(a, b)
    renamed = nn.ModuleDict({"y": b, "x": a})  # other names, other order
    before = weights_digest(first)
    assert weights_digest(renamed) == before
    with torch.no_grad():
        a.weight[0, 0] += 1e-3
    assert weights_digest(first) != before
