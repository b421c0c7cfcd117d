"""Checks of one field of a canonical row: each returns (normalised value, error message or None).

The messages are phrased for the person who has to fix the file; :mod:`.validate` puts them
together with the file, the row and the column.
"""

from __future__ import annotations

import difflib
import math
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any

from constrained_align.data.schema import CONTEXT_ROLES


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return f"a bool ({str(value).lower()})"
    if isinstance(value, str):
        shown = value if len(value) <= 20 else value[:17] + "..."
        return f"a string {shown!r}"
    if isinstance(value, (int, float)):
        return f"a number ({value})"
    return f"a {type(value).__name__}"


def _is_null(value: Any) -> bool:
    # pandas-written parquet and csv-derived frames spell null as NaN.
    return value is None or (isinstance(value, float) and math.isnan(value))


def text_problem(value: str) -> str | None:
    """What makes a string unusable as text, or None: a NUL character, a lone surrogate (not
    valid Unicode: it cannot be encoded, so no tokenizer reads it), or nothing visible."""
    if "\x00" in value:
        return f"contains a NUL character at position {value.index(chr(0))}"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        return (
            f"is not valid Unicode (a lone surrogate {value[err.start]!a} at position {err.start})"
        )
    if not value.strip():
        return "is empty or whitespace-only"
    if not any(not ch.isspace() and unicodedata.category(ch) != "Cf" for ch in value):
        return "holds only invisible characters (zero-width or format characters)"
    return None


def check_text(value: Any) -> tuple[str | None, str | None]:
    """A non-empty string (prompt, response) of visible, valid Unicode text."""
    if _is_null(value):
        return None, "is null; expected a non-empty string"
    if not isinstance(value, str):
        return None, f"expected a string, got {_type_name(value)}"
    problem = text_problem(value)
    return (None, problem) if problem else (value, None)


def check_id(value: Any) -> tuple[int | None, str | None]:
    """A preference id: 0, 1 or null; integral floats pass because parquet with nulls gives 1.0."""
    if _is_null(value):
        return None, None
    if isinstance(value, bool):  # bool is an int subclass: True would silently mean 1
        return None, f"expected 0, 1 or null, got {_type_name(value)}"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int):
        return None, f"expected 0, 1 or null, got {_type_name(value)}"
    if value not in (0, 1):
        return None, f"must be 0 or 1 (or null), got {value}"
    return value, None


def check_label(value: Any) -> tuple[bool | None, str | None]:
    """A safety label: true, false or null only (1/0 and "yes" are rejected as ambiguous)."""
    if _is_null(value):
        return None, None
    if not isinstance(value, bool):
        return None, f"expected true, false or null, got {_type_name(value)}"
    return value, None


def check_context(value: Any) -> tuple[list[dict[str, str]] | None, str | None]:
    """Earlier turns: a list of ``{"role", "content"}`` with role system/user/assistant."""
    if _is_null(value):
        return [], None
    if not isinstance(value, list):
        return None, f"expected a list of {{role, content}} messages, got {_type_name(value)}"
    messages = []
    for i, message in enumerate(value):
        if not isinstance(message, Mapping) or set(message) != {"role", "content"}:
            return None, f"message {i} must be an object with exactly 'role' and 'content'"
        role, content = message["role"], message["content"]
        if role not in CONTEXT_ROLES:
            return None, f"message {i} has role {role!r}; expected one of {CONTEXT_ROLES}"
        if not isinstance(content, str):
            return None, f"message {i} content must be a string, got {_type_name(content)}"
        problem = text_problem(content) if content else None
        if problem and "whitespace" not in problem:
            return None, f"message {i} content {problem}"
        messages.append({"role": role, "content": content})
    return messages, None


def check_optional_text(value: Any) -> tuple[str | None, str | None]:
    """An optional string (source, category)."""
    if _is_null(value):
        return None, None
    if not isinstance(value, str):
        return None, f"expected a string or null, got {_type_name(value)}"
    return value, None


def close_column(record: Mapping[str, Any], column: str, known: Iterable[str]) -> str | None:
    """The row's column that looks like a misspelling of ``column`` (difflib), or None.

    Args:
        record: the row as read.
        column: the file column that should be there.
        known: columns the schema uses anyway (never offered as a misspelling).
    """
    known = set(known)
    candidates = [c for c in record if isinstance(c, str) and c not in known]
    close = difflib.get_close_matches(column, candidates, n=1, cutoff=0.75)
    return close[0] if close else None


def missing_message(column: str, close: str | None) -> str:
    """``missing field 'x'``, with the look-alike column and the mapping that would fix it."""
    if close is None:
        return f"missing field '{column}'"
    return (
        f"missing field '{column}' (the file has '{close}'; rename it or map it with "
        f"--columns {column}={close})"
    )
