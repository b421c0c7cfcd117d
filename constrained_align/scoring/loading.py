"""The reward and cost models a run names: a saved score-model folder, a Safe RLHF score model
or a one-label sequence classifier (a folder, or a hub id when online; see
:mod:`~constrained_align.scoring.external`), or ``tiny`` (random, built in code, for smoke
tests and the tiny presets)."""

from __future__ import annotations

from pathlib import Path

from constrained_align.config import ConfigError
from constrained_align.models import describe_source
from constrained_align.scoring.external import describe_external
from constrained_align.scoring.function_scorer import (
    FunctionScorer,
    import_function,
    is_function_spec,
)
from constrained_align.scoring.score_model import CONFIG_NAME, ScoreModel
from constrained_align.scoring.shipped import JUDGES, shipped_path
from constrained_align.scoring.text_scorer import TextScorer

#: Initialisation seeds of the random tiny reward and cost models (they must differ).
TINY_SCORER_SEEDS = {"reward": 1, "cost": 2}


def load_scorer(
    spec: str, kind: str, *, batch_size: int, progress: bool, judge: bool = False
) -> TextScorer:
    """The ``kind`` model named by ``spec``: a shipped model's name (``default-cost``, ...), a
    score-model folder or hub id, or ``tiny``.

    Args:
        judge: the model judges (evaluation); only then may it be a shipped ``judge-*`` model,
            which no training run may optimise against.

    Raises:
        ConfigError: not a score model of a known layout, a model of the other kind, or a
            judge named for training.
    """
    if spec in JUDGES and not judge:
        raise ConfigError(
            f"scorers.{kind}: {spec} is an evaluation-only judge; train against "
            f"default-{kind} or a model of your own"
        )
    if is_function_spec(spec):
        return FunctionScorer(spec)  # type: ignore[return-value]  # scores like a TextScorer
    if spec == "tiny":
        model = ScoreModel.from_backbone(
            "tiny-encoder", kind, max_length=128, seed=TINY_SCORER_SEEDS.get(kind, 3)
        )
        return TextScorer(model, batch_size=batch_size, progress=progress)
    try:
        return TextScorer.from_pretrained(spec, kind=kind, batch_size=batch_size, progress=progress)
    except ConfigError as err:
        raise ConfigError(f"scorers.{kind}: {err}") from err


def describe_scorer(spec: str | None, kind: str) -> str:
    """Where the ``kind`` model named by ``spec`` would load from, without loading weights
    (a Safe RLHF or classifier folder's ``config.json`` is read and checked)."""
    if spec is None:
        raise ConfigError(f"scorers.{kind} is null: a run needs a saved model or 'tiny'")
    if spec == "tiny":
        return f"{kind}: tiny (random tiny-encoder model built in code)"
    if is_function_spec(spec):
        import_function(spec)  # fails now on a bad spec, before any model loads
        return f"{kind}: {spec} (a Python function over text)"
    if spec in JUDGES:
        raise ConfigError(f"scorers.{kind}: {spec} is an evaluation-only judge")
    if shipped_path(spec):
        return f"{kind}: {spec} (shipped, {shipped_path(spec)})"
    path = Path(spec).expanduser()
    if path.is_dir() and not (path / CONFIG_NAME).is_file() and (path / "config.json").is_file():
        try:
            return f"{kind}: " + describe_external(spec, kind)
        except ConfigError as err:
            raise ConfigError(f"scorers.{kind}: {err}") from err
    return f"{kind}: " + describe_source(spec, marker=CONFIG_NAME)
