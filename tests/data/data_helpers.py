"""Small builders shared by the data tests (imported as a plain module: tests have no packages)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

GOOD = {
    "prompt": "How do I bake bread?",
    "response_0": "Mix flour, water, yeast and salt, knead, let it rise, bake.",
    "response_1": "Buy some.",
    "better_response_id": 0,
    "safer_response_id": 1,
    "is_response_0_safe": True,
    "is_response_1_safe": True,
}

DROP = object()
"""Pass as a value to :func:`good` to remove that field."""


def good(i: int, **changes: Any) -> dict[str, Any]:
    """A valid canonical record, made distinct by ``i``, with ``changes`` applied."""
    row = {**GOOD, "prompt": f"{GOOD['prompt']} ({i})", **changes}
    return {k: v for k, v in row.items() if v is not DROP}


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> Path:
    """Rows as a jsonl file (one object per line)."""
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def hh(*turns: str) -> str:
    """An HH-RLHF transcript from alternating Human/Assistant turns."""
    speakers = ("Human", "Assistant")
    return "".join(f"\n\n{speakers[i % 2]}: {text}" for i, text in enumerate(turns))
