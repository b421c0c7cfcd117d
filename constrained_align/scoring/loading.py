"""The reward and cost models a run names: a saved score-model folder, or ``tiny`` (random,
built in code, for smoke tests and the tiny presets)."""

from __future__ import annotations

from pathlib import Path

from constrained_align.config import ConfigError
from constrained_align.models import describe_source
from constrained_align.scoring.score_model import CONFIG_NAME, ScoreModel
from constrained_align.scoring.text_scorer import TextScorer

#: Initialisation seeds of the random tiny reward and cost models (they must differ).
TINY_SCORER_SEEDS = {"reward": 1, "cost": 2}


def load_scorer(spec: str, kind: str, *, batch_size: int, progress: bool) -> TextScorer:
    """The ``kind`` model named by ``spec``: a saved score-model folder, or ``tiny``.

    Raises:
        ConfigError: not a saved score-model folder, or a model of the other kind.
    """
    if spec == "tiny":
        model = ScoreModel.from_backbone(
            "tiny-encoder", kind, max_length=128, seed=TINY_SCORER_SEEDS[kind]
        )
        return TextScorer(model, batch_size=batch_size, progress=progress)
    path = Path(spec)
    if not (path / CONFIG_NAME).is_file():
        raise ConfigError(f"scorers.{kind}: {spec} is not a saved score-model folder")
    scorer = TextScorer.from_pretrained(path, batch_size=batch_size, progress=progress)
    if scorer.kind != kind:
        raise ConfigError(f"scorers.{kind}: {spec} is a {scorer.kind} model, not a {kind} model")
    return scorer


def describe_scorer(spec: str | None, kind: str) -> str:
    """Where the ``kind`` model named by ``spec`` would load from, without loading it."""
    if spec is None:
        raise ConfigError(f"scorers.{kind} is null: a run needs a saved model or 'tiny'")
    if spec == "tiny":
        return f"{kind}: tiny (random tiny-encoder model built in code)"
    return f"{kind}: " + describe_source(spec, marker=CONFIG_NAME)
