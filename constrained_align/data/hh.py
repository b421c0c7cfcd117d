"""Chosen/rejected data → canonical rows: HH-RLHF transcripts and prompt/chosen/rejected files.

HH-RLHF stores each pair as two full transcripts, ``"\\n\\nHuman: ...\\n\\nAssistant: ..."``,
that should differ only in the final Assistant turn. We split each into ``context`` (the earlier
turns as messages), ``prompt`` (the final Human turn) and the final Assistant reply.

Parsing rules (documented because the upstream data is not perfectly regular):

- A turn starts at ``"\\n\\nHuman:"`` or ``"\\n\\nAssistant:"``; a transcript may also start
  with ``"Human:"``. Any other text (``"Humans:"``, an inline ``"Human:"``) stays in the turn.
- Turn text is stripped of surrounding whitespace (upstream puts a space after the colon).
- Consecutive turns by the same speaker (a few upstream rows have two Assistant turns in a row)
  are merged into one message joined by a blank line, so conversations alternate as chat
  templates require.
- The last message must be the Assistant's and the one before it the Human's.

Which of chosen/rejected becomes ``response_0`` is decided by a hash of the row (the lowest bit
of the first byte of sha256 of both texts), so the preferred id is 0 or 1 about equally often
and a model cannot learn "response 0 wins"; the same row always gets the same order.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, Literal

from constrained_align.data.fields import (
    check_context,
    check_optional_text,
    check_text,
)
from constrained_align.data.validate import (
    RowChecker,
)

Axis = Literal["helpful", "harmless"]

_TURN = re.compile(r"\n\n(Human|Assistant):")
_ROLES = {"Human": "user", "Assistant": "assistant"}


def parse_transcript(text: str) -> list[dict[str, str]]:
    """Split an HH-RLHF transcript into alternating ``{"role", "content"}`` messages.

    Args:
        text: ``"\\n\\nHuman: ...\\n\\nAssistant: ..."``.

    Returns:
        Messages with roles ``user`` / ``assistant`` (same-speaker runs merged).

    Raises:
        ValueError: text before the first turn, or no turn at all.
    """
    if text.startswith(("Human:", "Assistant:")):
        text = "\n\n" + text
    parts = _TURN.split(text)
    if parts[0].strip():
        raise ValueError("text before the first 'Human:' turn")
    if len(parts) < 3:
        raise ValueError("no '\\n\\nHuman:' / '\\n\\nAssistant:' turns")
    messages: list[dict[str, str]] = []
    for speaker, content in zip(parts[1::2], parts[2::2]):
        role, content = _ROLES[speaker], content.strip()
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"] = f"{messages[-1]['content']}\n\n{content}".strip()
        else:
            messages.append({"role": role, "content": content})
    return messages


def split_transcript(text: str) -> tuple[list[dict[str, str]], str, str]:
    """``(context, prompt, reply)`` of a transcript: earlier turns, final Human turn, final reply.

    Args:
        text: ``"\\n\\nHuman: ...\\n\\nAssistant: ..."``, as in HH-RLHF's ``chosen`` column.

    Returns:
        The earlier turns as messages, the final Human turn's text and the final Assistant
        reply's text.

    Raises:
        ValueError: the transcript does not end with a Human turn followed by an Assistant turn.
    """
    messages = parse_transcript(text)
    if messages[-1]["role"] != "assistant":
        raise ValueError("does not end with an Assistant turn")
    if len(messages) < 2:
        raise ValueError("has no Human turn before the final Assistant turn")
    return messages[:-2], messages[-2]["content"], messages[-1]["content"]


def chosen_first(*texts: str) -> bool:
    """Deterministic coin for the response order: True puts the chosen response at index 0."""
    digest = hashlib.sha256("\x00".join(texts).encode("utf-8")).digest()
    return digest[0] % 2 == 0


def canonical_from_choice(
    *,
    prompt: str,
    context: list[dict[str, str]],
    chosen: str,
    rejected: str,
    axis: Axis,
    source: str,
    order_key: tuple[str, ...],
) -> dict[str, Any]:
    """One canonical row from a chosen/rejected pair on one preference axis.

    Args:
        prompt: final user turn.
        context: earlier turns.
        chosen: the preferred response (more helpful, or less harmful).
        rejected: the other response.
        axis: ``"helpful"`` sets ``better_response_id``, ``"harmless"`` ``safer_response_id``.
        source: the row's origin.
        order_key: texts hashed by :func:`chosen_first` to pick the response order.

    Returns:
        The canonical row (the other id and both safety labels null).
    """
    first = chosen_first(*order_key)
    preferred = 0 if first else 1
    return {
        "prompt": prompt,
        "response_0": chosen if first else rejected,
        "response_1": rejected if first else chosen,
        "better_response_id": preferred if axis == "helpful" else None,
        "safer_response_id": preferred if axis == "harmless" else None,
        "is_response_0_safe": None,
        "is_response_1_safe": None,
        "context": context,
        "source": source,
    }


def hh_row(checker: RowChecker, *, axis: Axis, source: str) -> dict[str, Any] | None:
    """Canonical row from an HH-RLHF ``chosen``/``rejected`` record.

    Args:
        checker: holds the record; every problem found is recorded on it.
        axis: which id ``chosen`` sets (see :func:`canonical_from_choice`).
        source: the row's origin.

    Returns:
        The canonical row, or None when the record is invalid (its errors are on ``checker``).
    """
    known = ("chosen", "rejected")
    texts = {n: checker.get(n, check_text, required=True, known=known) for n in known}
    if checker.errors:
        return None
    parsed = {}
    for name, text in texts.items():
        try:
            parsed[name] = split_transcript(text)
        except ValueError as err:
            checker.error(name, f"transcript {err}")
    if checker.errors:
        return None
    (context, prompt, chosen), (context_r, prompt_r, rejected) = (
        parsed["chosen"],
        parsed["rejected"],
    )
    if (context, prompt) != (context_r, prompt_r):
        checker.error(
            "rejected",
            "the conversation before the final Assistant reply differs from chosen's "
            "(the two transcripts must differ only in the final reply)",
        )
    if not prompt:
        checker.error("chosen", "the final Human turn is empty")
    for name, reply in (("chosen", chosen), ("rejected", rejected)):
        if not reply:
            checker.error(name, "the final Assistant reply is empty")
    if chosen and chosen == rejected:
        checker.error("rejected", "final reply identical to chosen's")
    if checker.errors:
        return None
    return canonical_from_choice(
        prompt=prompt,
        context=context,
        chosen=chosen,
        rejected=rejected,
        axis=axis,
        source=source,
        order_key=(texts["chosen"], texts["rejected"]),
    )


def chosen_rejected_row(
    checker: RowChecker, *, axis: Axis, default_source: str
) -> dict[str, Any] | None:
    """Canonical row from a ``prompt, chosen, rejected[, context, source]`` record.

    Args:
        checker: holds the record and the column mapping; every problem is recorded on it.
        axis: which id ``chosen`` sets (see :func:`canonical_from_choice`).
        default_source: the ``source`` of a record without one.

    Returns:
        The canonical row, or None when the record is invalid (its errors are on ``checker``).
    """
    known = [checker.column(n) for n in ("prompt", "chosen", "rejected", "context", "source")]
    prompt = checker.get("prompt", check_text, required=True, known=known)
    chosen = checker.get("chosen", check_text, required=True, known=known)
    rejected = checker.get("rejected", check_text, required=True, known=known)
    context = checker.get("context", check_context, required=False, known=known)
    source = checker.get("source", check_optional_text, required=False, known=known)
    if chosen is not None and rejected is not None and chosen.strip() == rejected.strip():
        checker.error("rejected", f"identical to {checker.column('chosen')!r}")
    if checker.errors:
        return None
    return canonical_from_choice(
        prompt=prompt,
        context=context or [],
        chosen=chosen,
        rejected=rejected,
        axis=axis,
        source=source or default_source,
        order_key=(prompt, chosen, rejected),
    )


def infer_axis(path: str | Path) -> Axis | None:
    """The HH-RLHF preference axis named by a file's path.

    Args:
        path: the data file; its name and its folder's name are searched.

    Returns:
        ``"helpful"`` or ``"harmless"`` when exactly one of them occurs, else None.
    """
    name = f"{Path(path).parent.name}/{Path(path).name}".lower()
    found = [axis for axis in ("helpful", "harmless") if axis in name]
    return found[0] if len(found) == 1 else None
