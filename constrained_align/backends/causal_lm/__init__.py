"""The causal-LM policy backend: a transformers causal LM (LoRA or full weights) behind the
:class:`~constrained_align.types.PolicyBackend` interface.

- :mod:`.policy` — :class:`CausalLMPolicy`: sample, log-probs, critic values, step, state;
- :mod:`.sampling` — batched KV-cache sampling from a seeded generator;
- :mod:`.logprobs` — response log-probs without the (B, T, V) logits;
- :mod:`.sequences` — prompt batches, token sequences, padding, the length settings;
- :mod:`.weights` — where the trainable weights and the frozen reference live (LoRA, full);
- :mod:`.critics` — value functions as further adapters on the shared base;
- :mod:`.task` — pairs and prompts of an LM run as the algorithms' ``Task``;
- :mod:`.loading` — loading a causal LM (tiny, SmolLM2, a folder or hub id);
- :mod:`.identity` — what identifies a model and tokenizer for the caches.
"""

from constrained_align.backends.causal_lm.policy import CausalLMPolicy
from constrained_align.backends.causal_lm.sequences import (
    LMSequences,
    LMSettings,
    PromptBatch,
    SamplingSettings,
)

__all__ = ["CausalLMPolicy", "LMSequences", "LMSettings", "PromptBatch", "SamplingSettings"]
