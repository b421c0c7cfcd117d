"""Reward and cost score models: the model (a backbone plus a linear head), scoring text with
its own tokenizer, training on preference pairs and safety labels, and held-out evaluation.

c > 0 is unsafe for every cost model; reward is helpfulness, higher is better.
"""

from constrained_align.scoring.score_model import Encoded, ScoreModel, ScoreModelConfig
from constrained_align.scoring.text_scorer import SequenceScorer, TextScorer

__all__ = ["Encoded", "ScoreModel", "ScoreModelConfig", "SequenceScorer", "TextScorer"]
