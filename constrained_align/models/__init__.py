"""Reward and cost score models over any transformers backbone, and text-level scoring."""

from constrained_align.models.backbones import (
    BackboneNotFoundError,
    BackboneSource,
    is_decoder,
    load_backbone,
    minilm_dir,
    resolve,
    smollm2_source,
)
from constrained_align.models.score_model import Encoded, ScoreModel, ScoreModelConfig
from constrained_align.models.scorer import TextScorer
from constrained_align.models.tiny import tiny_causal_lm, tiny_encoder, tiny_tokenizer

__all__ = [
    "BackboneNotFoundError",
    "BackboneSource",
    "Encoded",
    "ScoreModel",
    "ScoreModelConfig",
    "TextScorer",
    "is_decoder",
    "load_backbone",
    "minilm_dir",
    "resolve",
    "smollm2_source",
    "tiny_causal_lm",
    "tiny_encoder",
    "tiny_tokenizer",
]
