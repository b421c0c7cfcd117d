"""Tiny models and a tokenizer built in code, for tests and the ``tiny`` presets.

Nothing here touches the disk or the network: the tokenizer is a byte-level BPE with no merges
(one token per UTF-8 byte, 256 tokens plus specials) and the models are randomly initialised from
small configs. They exercise every code path of the real models in a fraction of a second.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import (
    BertConfig,
    BertModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

from constrained_align.data.chat import DEFAULT_CHAT_TEMPLATE

#: Special tokens of the tiny tokenizer, in id order after the 256 byte tokens.
SPECIALS = ("<pad>", "<eos>", "<cls>", "<sep>", "<unk>")


def tiny_tokenizer(*, encoder: bool = False) -> PreTrainedTokenizerFast:
    """A byte-level tokenizer: every UTF-8 byte is one token, so any text round-trips.

    Args:
        encoder: add BERT-style ``<cls> a <sep> b <sep>`` special tokens around single texts
            and pairs (for encoder score models); decoders get no automatic specials.

    Returns:
        A fast tokenizer with pad ``<pad>`` (distinct from EOS, as ALGORITHMS.md §2.1 asks),
        eos ``<eos>`` and the library's plain chat template.
    """
    byte_to_unicode = pre_tokenizers.ByteLevel.alphabet()
    vocab = {symbol: i for i, symbol in enumerate(sorted(byte_to_unicode))}
    for name in SPECIALS:
        vocab[name] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    if encoder:
        cls, sep = vocab["<cls>"], vocab["<sep>"]
        tok.post_processor = processors.TemplateProcessing(
            single="<cls> $A <sep>",
            pair="<cls> $A <sep> $B:1 <sep>:1",
            special_tokens=[("<cls>", cls), ("<sep>", sep)],
        )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="<eos>",
        unk_token="<unk>",
        cls_token="<cls>" if encoder else None,
        sep_token="<sep>" if encoder else None,
        model_max_length=512,
    )
    fast.chat_template = DEFAULT_CHAT_TEMPLATE
    return fast


def tiny_encoder(seed: int = 0, *, hidden: int = 32, layers: int = 2) -> PreTrainedModel:
    """A randomly initialised BERT encoder sized for :func:`tiny_tokenizer` (``encoder=True``)."""
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=256 + len(SPECIALS),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=512,
        pad_token_id=256,
    )
    return BertModel(config, add_pooling_layer=False)


def tiny_causal_lm(seed: int = 0, *, hidden: int = 32, layers: int = 2) -> PreTrainedModel:
    """A randomly initialised Llama-architecture causal LM sized for :func:`tiny_tokenizer`."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=256 + len(SPECIALS),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=256,
        eos_token_id=257,
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config)
