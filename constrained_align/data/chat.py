"""Conversations → model input, always through the tokenizer's chat template.

Our code never builds a prompt by string concatenation: a prompt and its ``context`` become chat
messages, and the tokenizer's template renders them. That keeps instruction-tuned models in the
format they were trained on. Base models often ship without a template;
:func:`ensure_chat_template` gives them :data:`DEFAULT_CHAT_TEMPLATE`, a plain format::

    <system text>                 (only if there is a system message, then a blank line)
    User: <user turn>
    Assistant: <assistant turn><eos>
    User: <final prompt>
    Assistant:

Assistant turns end with the EOS token because the score models read their score at the EOS
that closes a response (ALGORITHMS.md §2.1); the generation prompt ``Assistant:`` has no
trailing space so that a BPE tokenizer attaches the space to the reply's first word.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # transformers is heavy; only the type is needed here
    from transformers import PreTrainedTokenizerBase

DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] + '\\n\\n' }}"
    "{% elif message['role'] == 'user' %}{{ 'User: ' + message['content'] + '\\n' }}"
    "{% else %}{{ 'Assistant: ' + message['content'] + (eos_token or '') + '\\n' }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


def to_messages(
    prompt: str, context: Sequence[Mapping[str, str]] | None = None
) -> list[dict[str, str]]:
    """Chat messages for a conversation: the earlier turns, then ``prompt`` as the user turn.

    Args:
        prompt: the final user turn.
        context: earlier ``{"role", "content"}`` messages ([] or None for single-turn).

    Returns:
        New message dicts (the inputs are not modified), ending with the user turn.
    """
    messages = [{"role": m["role"], "content": m["content"]} for m in context or ()]
    return [*messages, {"role": "user", "content": prompt}]


def ensure_chat_template(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Install :data:`DEFAULT_CHAT_TEMPLATE` on a tokenizer that has no chat template.

    A tokenizer that already has a template is left unchanged.

    Args:
        tokenizer: a transformers tokenizer (modified in place).

    Returns:
        The same tokenizer, for chaining.
    """
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    return tokenizer


def render_prompt(
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    context: Sequence[Mapping[str, str]] | None = None,
) -> str:
    """The text a model should continue: the conversation rendered with a generation prompt.

    Args:
        tokenizer: a tokenizer with a chat template (see :func:`ensure_chat_template`).
        prompt: the final user turn.
        context: earlier turns.

    Returns:
        ``tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)``.

    Raises:
        ValueError: the tokenizer has no chat template.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            f"{type(tokenizer).__name__} has no chat template; call "
            "constrained_align.data.chat.ensure_chat_template(tokenizer) first"
        )
    return tokenizer.apply_chat_template(
        to_messages(prompt, context), tokenize=False, add_generation_prompt=True
    )


def reply_text(prompt_text: str, response: str) -> str:
    """The reply as a decoder reads it right after ``prompt_text``.

    Templates render earlier replies as ``"Assistant: text"`` while the generation prompt ends
    at ``"Assistant:"``; when neither side of the boundary has whitespace the reply gets the
    leading space the template would have given it, so it tokenizes as in a rendered turn.
    """
    if prompt_text and response and not (prompt_text[-1].isspace() or response[0].isspace()):
        return " " + response
    return response
