"""What identifies a causal LM for the caches, and what the backend checks about it."""

from __future__ import annotations

from typing import Any

from constrained_align.backends.causal_lm.weights import FullWeights, LoraWeights
from constrained_align.utils.cache import content_key, state_fingerprint


def weights_fingerprint(weights: LoraWeights | FullWeights) -> str:
    """Content hash of the reference weights (adapter tensors are off in the reference)."""
    with weights.reference_model() as model:
        return state_fingerprint(model, skip="lora_")


def tokenizer_fingerprint(tokenizer: Any, eos_ids: list[int]) -> str:
    """Content hash of a tokenizer's vocabulary and rules, its chat template and the EOS ids."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    rules = backend.to_str() if backend is not None else sorted(tokenizer.get_vocab().items())
    return content_key(rules, tokenizer.chat_template, eos_ids)


def end_of_turn_ids(tokenizer: Any, model: Any) -> list[int]:
    """Tokens that end a response: the tokenizer's EOS and the generation config's EOS list."""
    ids = [int(tokenizer.eos_token_id)]
    generation = getattr(model, "generation_config", None)
    extra = getattr(generation, "eos_token_id", None) if generation is not None else None
    for token in [extra] if isinstance(extra, int) else extra or []:
        if int(token) not in ids:
            ids.append(int(token))
    return ids


# Config fields of models whose forward post-processes the LM head's logits. The chunked
# log-probs read the head directly, so such models would be scored with the wrong logits.
LOGIT_POSTPROCESSING = {"logits_scaling": 1.0, "logit_scale": 1.0, "final_logit_softcapping": None}


def check_plain_logits(config: Any) -> None:
    """Refuse models whose logits are scaled or soft-capped after the LM head."""
    for name, neutral in LOGIT_POSTPROCESSING.items():
        value = getattr(config, name, neutral)
        if value is not None and value != neutral:
            raise ValueError(
                f"{type(config).__name__} has {name} = {value}: its logits are post-processed "
                "after the LM head, which the chunked log-probs do not reproduce"
            )
