"""Load the causal LM that a run aligns: tiny (in code), SmolLM2 (PyPI GGUF), a folder or hub id.

Attention: ``attn_implementation: auto`` picks ``flash_attention_2`` when the ``flash-attn``
package imports and CUDA is available, and ``sdpa`` otherwise (CPU included). Nothing is
downloaded here unless ``name`` is a hub id and the machine is online.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import torch

from constrained_align.data.chat import ensure_chat_template
from constrained_align.models import tiny
from constrained_align.models.backbones import refusing_remote_code, resolve

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def choose_attn_implementation(requested: str = "auto") -> str:
    """``flash_attention_2`` when flash-attn and CUDA are present, else ``sdpa``; or as asked."""
    if requested != "auto":
        return requested
    has_flash = importlib.util.find_spec("flash_attn") is not None
    return "flash_attention_2" if has_flash and torch.cuda.is_available() else "sdpa"


def load_causal_lm(
    name: str,
    *,
    dtype: str = "float32",
    attn_implementation: str = "auto",
    seed: int = 0,
    trust_remote_code: bool = False,
) -> tuple[Any, Any]:
    """``(model, tokenizer)`` of a causal LM, the tokenizer with a chat template and a pad token.

    Args:
        name: ``tiny-decoder``, ``smollm2``, a folder or a hub id.
        dtype: weights dtype name.
        attn_implementation: ``auto`` (see :func:`choose_attn_implementation`) or a name.
        seed: initialisation seed of the tiny model.
        trust_remote_code: let a model that ships its own Python code run it (off: such a
            model is refused with :class:`~constrained_align.models.RemoteCodeError`).
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    attn = choose_attn_implementation(attn_implementation)
    if name == "tiny-decoder":
        model, tokenizer = tiny.tiny_causal_lm(seed), tiny.tiny_tokenizer()
        model.config._attn_implementation = attn if attn != "flash_attention_2" else "sdpa"
        return model.to(DTYPES[dtype]), tokenizer
    source = resolve(name)
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    with refusing_remote_code(name, "model.trust_remote_code"):
        AutoConfig.from_pretrained(source.path, **kwargs)  # refuses remote code before anything
        tokenizer = AutoTokenizer.from_pretrained(source.path, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(
            source.path, dtype=DTYPES[dtype], attn_implementation=attn, **kwargs
        )
    ensure_chat_template(tokenizer)
    if tokenizer.pad_token is None:  # padding is always masked, so EOS can fill it
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


class ModelPool:
    """Loads each causal LM once per process and hands out independent deep copies.

    A comparison trains and evaluates many models from the same base weights in one process;
    loading SmolLM2 from its GGUF file takes about 35 s on 2 CPU cores, a copy well under one.
    The pool keeps one pristine copy of every model it loaded (memory: one extra model).
    """

    def __init__(self) -> None:
        self._loaded: dict[tuple[Any, ...], tuple[Any, Any]] = {}

    def load(self, name: str, **kwargs: Any) -> tuple[Any, Any]:
        """Like :func:`load_causal_lm`; the model is a fresh copy, the tokenizer is shared."""
        import copy

        key = (name, *sorted(kwargs.items()))
        if key not in self._loaded:
            self._loaded[key] = load_causal_lm(name, **kwargs)
        model, tokenizer = self._loaded[key]
        return copy.deepcopy(model), tokenizer
