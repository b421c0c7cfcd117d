"""Loading the policy model: the attention implementation rule and the tiny in-code model."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from constrained_align.backends.causal_lm import loading as policy
from constrained_align.backends.causal_lm.loading import choose_attn_implementation, load_causal_lm


@pytest.mark.parametrize(
    ("has_flash", "has_cuda", "expected"),
    [
        (True, True, "flash_attention_2"),
        (True, False, "sdpa"),  # flash-attn needs CUDA
        (False, True, "sdpa"),  # CUDA without the package
        (False, False, "sdpa"),
    ],
)
def test_auto_attention_needs_both_flash_attn_and_cuda(monkeypatch, has_flash, has_cuda, expected):
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        if name == "flash_attn":
            return object() if has_flash else None
        return real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(policy.importlib.util, "find_spec", find_spec)
    monkeypatch.setattr(policy.torch.cuda, "is_available", lambda: has_cuda)
    assert choose_attn_implementation("auto") == expected
    assert choose_attn_implementation("eager") == "eager"  # an explicit choice is kept


def test_tiny_decoder_loads_with_sdpa_and_a_chat_template():
    model, tokenizer = load_causal_lm("tiny-decoder", seed=3)
    assert model.config._attn_implementation == "sdpa"
    assert tokenizer.chat_template and tokenizer.eos_token_id is not None
    again, _ = load_causal_lm("tiny-decoder", seed=3)
    for a, b in zip(model.parameters(), again.parameters()):
        assert torch.equal(a, b)  # the seed fixes the weights
