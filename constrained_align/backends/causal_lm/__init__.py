"""The causal-LM policy backend: a transformers causal LM (LoRA or full weights) behind the
:class:`~constrained_align.types.PolicyBackend` interface.

- :mod:`.policy` — :class:`CausalLMPolicy`: sample, log-probs, critic values, step, state;
- :mod:`.sampling` — batched KV-cache sampling, one seeded stream per response;
- :mod:`.forward` — one decoder pass read out at the response tokens (log-probs, values);
- :mod:`.packing` — padding-free rows with each shared prompt once (the fast path);
- :mod:`.logprobs` — response log-probs without the (B, T, V) logits;
- :mod:`.sequences` — prompt batches, token sequences, padding, the length settings;
- :mod:`.weights` — where the trainable weights and the frozen reference live (LoRA, full);
- :mod:`.critics` — value functions as further adapters on the shared base;
- :mod:`.task` — pairs and prompts of an LM run as the algorithms' ``Task``;
- :mod:`.loading` — :func:`load_causal_lm`: a causal LM (tiny, SmolLM2, a folder or hub id),
  as a plain trainable transformers model (TRL's trainers take it as it is);
- :mod:`.identity` — what identifies a model and tokenizer for the caches.
"""

from constrained_align.backends.causal_lm.loading import load_causal_lm
from constrained_align.backends.causal_lm.policy import CausalLMPolicy
from constrained_align.backends.causal_lm.sequences import (
    LMSequences,
    LMSettings,
    PromptBatch,
    SamplingSettings,
)

__all__ = [
    "CausalLMPolicy",
    "LMSequences",
    "LMSettings",
    "PromptBatch",
    "SamplingSettings",
    "load_causal_lm",
]
