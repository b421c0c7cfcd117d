"""Prompt-only sets (red-team prompts, over-refusal prompts, generic prompt files).

Every loader returns ``prompt, context, source, category, harmful``
(:data:`~constrained_align.data.schema.PROMPT_FEATURES`); ``harmful`` is null when unknown.
Known formats are detected from their columns (and, for Safe RLHF's ``problem.json``, its name):

=============  ===========================================  ===================================
kind           file                                          rows kept, ``harmful``
=============  ===========================================  ===================================
beavertails    BeaverTails-Evaluation.json                   all, True (red-team prompts)
safe-rlhf      Safe RLHF ``problem.json`` (prompt, category)  all, True (red-team prompts)
advbench       AdvBench ``harmful_behaviors.csv`` (goal)      all, True
xstest         ``xstest_prompts.csv``                         all, ``label == "unsafe"``
harmbench      HarmBench behaviors csv                        ``FunctionalCategory == standard``
                                                              (copyright/contextual need extra
                                                              judging or context), True
prompts        any file with a ``prompt`` column              all; optional ``context``,
                                                              ``category``, ``harmful``, ``source``
=============  ===========================================  ===================================
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from datasets import Dataset

from constrained_align.data.fields import (
    check_context,
    check_label,
    check_optional_text,
    check_text,
)
from constrained_align.data.readers import RawTable, read_table
from constrained_align.data.schema import prompts_to_dataset
from constrained_align.data.validate import (
    RowChecker,
    ValidationReport,
    finish,
)

Kind = Literal["beavertails", "safe-rlhf", "advbench", "xstest", "harmbench", "prompts"]

# kind → (canonical → file column, fixed harmful value or None to read it, default source)
_SPECS: dict[str, tuple[dict[str, str], bool | None, str]] = {
    "beavertails": ({}, True, "beavertails-evaluation"),
    "safe-rlhf": ({}, True, "safe-rlhf/problem.json"),
    "advbench": ({"prompt": "goal"}, True, "advbench"),
    "xstest": ({"category": "type"}, None, "xstest"),
    "harmbench": ({"prompt": "Behavior", "category": "SemanticCategory"}, True, "harmbench"),
    "prompts": ({}, None, ""),
}


def detect_kind(path: str | Path, columns: set[str]) -> Kind:
    """Guess a prompt file's kind from its column names (see the module table)."""
    if {"goal", "target"} <= columns:
        return "advbench"
    if {"Behavior", "FunctionalCategory"} <= columns:
        return "harmbench"
    if {"prompt", "type", "label", "focus"} <= columns:
        return "xstest"
    if {"prompt", "category", "category_id"} <= columns:
        return "beavertails"
    if Path(path).name == "problem.json" and {"prompt", "category"} <= columns:
        return "safe-rlhf"
    return "prompts"


def _harmful_xstest(value: Any) -> tuple[bool | None, str | None]:
    if value not in ("safe", "unsafe"):
        return None, f"expected 'safe' or 'unsafe', got {value!r}"
    return value == "unsafe", None


def _prompt_row(
    checker: RowChecker, kind: str, fixed_harmful: bool | None, default_source: str
) -> dict[str, Any] | None:
    known = [checker.column(n) for n in ("prompt", "context", "category", "harmful", "source")]
    prompt = checker.get("prompt", check_text, required=True, known=known)
    category = checker.get("category", check_optional_text, required=False, known=known)
    context, source, harmful = [], None, fixed_harmful
    if kind == "xstest":
        harmful = checker.get("label", _harmful_xstest, required=True, known=known)
    elif kind == "prompts":
        context = checker.get("context", check_context, required=False, known=known) or []
        source = checker.get("source", check_optional_text, required=False, known=known)
        harmful = checker.get("harmful", check_label, required=False, known=known)
    if checker.errors:
        return None
    return {
        "prompt": prompt,
        "context": context,
        "source": source or default_source,
        "category": category,
        "harmful": harmful,
    }


def prompt_records(
    path: str | Path,
    *,
    kind: Kind | None = None,
    columns: Mapping[str, str] | None = None,
    only: Literal["safe", "unsafe"] | None = None,
    source: str | None = None,
) -> tuple[list[dict[str, Any]], ValidationReport]:
    """Prompt rows and the validation report of a prompt file (see :func:`load_prompts`)."""
    if only not in (None, "safe", "unsafe"):
        raise ValueError(f"only must be 'safe', 'unsafe' or None, got {only!r}")
    table: RawTable = read_table(path)
    first = table.records[0] if table.records else {}
    kind = kind or detect_kind(path, set(first))
    if kind not in _SPECS:
        raise ValueError(f"unknown prompt file kind {kind!r}; known: {sorted(_SPECS)}")
    mapping, fixed_harmful, default_source = _SPECS[kind]
    mapping = {**mapping, **(columns or {})}
    default_source = source or default_source or Path(path).name
    report = ValidationReport(file=str(path), unit=table.unit, errors=list(table.errors))
    rows = []
    for record, number in zip(table.records, table.row_numbers):
        if kind == "harmbench" and record.get("FunctionalCategory") != "standard":
            continue  # not a plain prompt set: copyright needs a hash judge, contextual a context
        checker = RowChecker(record, number, table.unit, mapping)
        row = _prompt_row(checker, kind, fixed_harmful, default_source)
        report.total_rows += 1
        report.errors.extend(checker.errors)
        if row is not None:
            report.valid_rows += 1
            # `only` selects; the rows it leaves out are valid, so they count as valid above.
            if only is None or row["harmful"] is (only == "unsafe"):
                rows.append(row)
    report.total_rows += len({e.row for e in table.errors})
    return rows, report


def load_prompts(
    path: str | Path,
    *,
    kind: Kind | None = None,
    columns: Mapping[str, str] | None = None,
    only: Literal["safe", "unsafe"] | None = None,
    source: str | None = None,
    skip_invalid: bool = False,
) -> Dataset:
    """A prompt-only set as ``prompt, context, source, category, harmful``.

    Args:
        path: the prompt file (json, jsonl(.gz), parquet or csv).
        kind: the format (module table); None detects it from the columns.
        columns: canonical name (``prompt``, ``context``, ``category``, ``harmful``, ``source``)
            → file column, for generic files (and to override a known format's mapping).
        only: keep only ``harmful == False`` (``"safe"``, e.g. XSTest's over-refusal prompts)
            or ``harmful == True`` (``"unsafe"``) rows.
        source: ``source`` of rows without one (default: the kind's name, or the file name).
        skip_invalid: drop invalid rows with a warning instead of raising.

    Returns:
        The prompts, in file order (HarmBench: the 200 ``standard`` behaviors of the full file).

    Raises:
        DataError: unreadable file, or invalid rows without ``skip_invalid``.
    """
    rows, report = prompt_records(path, kind=kind, columns=columns, only=only, source=source)
    finish(report, skip_invalid=skip_invalid)
    return prompts_to_dataset(rows)
