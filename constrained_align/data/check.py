"""``constrained-align data check``: validate a pair file and list every problem.

Checking never raises for bad rows (it reports them); only a file that cannot be read at all
raises :class:`~constrained_align.data.validate.DataError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from datasets import Dataset

from constrained_align.data.hh import infer_axis
from constrained_align.data.loaders import (
    chosen_rejected_records,
    hh_rlhf_records,
    pairs_records,
    pku_saferlhf_records,
)
from constrained_align.data.readers import read_table
from constrained_align.data.schema import pairs_to_dataset
from constrained_align.data.validate import ValidationReport, finish

Format = Literal["auto", "pairs", "hh-rlhf", "pku", "chosen-rejected"]
FORMATS: tuple[str, ...] = ("auto", "pairs", "hh-rlhf", "pku", "chosen-rejected")


def detect_format(path: str | Path, columns: Mapping[str, str] | None = None) -> str:
    """``hh-rlhf`` (chosen/rejected transcripts), ``chosen-rejected`` (with a prompt) or ``pairs``.

    Decided from the first row's columns (after the canonical → file ``columns`` mapping).
    """
    columns = columns or {}
    table = read_table(path)
    first = set(table.records[0]) if table.records else set()
    has = {name for name in ("prompt", "chosen", "rejected") if columns.get(name, name) in first}
    if {"chosen", "rejected"} <= has:
        return "chosen-rejected" if "prompt" in has else "hh-rlhf"
    return "pairs"


def file_records(
    path: str | Path, *, columns: Mapping[str, str] | None = None, fmt: Format = "auto"
) -> tuple[list[dict[str, Any]], ValidationReport]:
    """Canonical rows and the validation report of a data file, by format.

    Args:
        path: the file.
        columns: canonical name → file column.
        fmt: ``pairs`` (canonical schema, :func:`load_pairs`), ``pku`` (PKU-SafeRLHF, extra
            columns dropped), ``hh-rlhf`` (transcripts), ``chosen-rejected``
            (prompt/chosen/rejected), or ``auto`` (:func:`detect_format`).

    Returns:
        ``(valid rows, report)``; bad rows are reported, never raised.

    Raises:
        DataError: the file cannot be read at all.
        ValueError: unknown ``fmt``.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")
    if fmt == "auto":
        fmt = detect_format(path, columns)  # type: ignore[assignment]
    if fmt == "pku":
        return pku_saferlhf_records(Path(path))
    if fmt == "hh-rlhf":
        # The axis only decides which id is set; any axis checks the same things.
        return hh_rlhf_records(path, axis=infer_axis(path) or "helpful")
    if fmt == "chosen-rejected":
        return chosen_rejected_records(path, columns=columns)
    return pairs_records(path, columns=columns)


def check_file(
    path: str | Path, *, columns: Mapping[str, str] | None = None, fmt: Format = "auto"
) -> ValidationReport:
    """Validate a data file the way the matching loader would, without raising for bad rows."""
    return file_records(path, columns=columns, fmt=fmt)[1]


def load_file(
    path: str | Path,
    *,
    columns: Mapping[str, str] | None = None,
    fmt: Format = "auto",
    skip_invalid: bool = False,
) -> Dataset:
    """Canonical rows of any supported pair file (see :func:`file_records` for formats).

    Raises:
        DataError: unreadable file, or invalid rows without ``skip_invalid``.
    """
    rows, report = file_records(path, columns=columns, fmt=fmt)
    finish(report, skip_invalid=skip_invalid)
    return pairs_to_dataset(rows)


def format_report(report: ValidationReport, *, limit: int = 20) -> str:
    """The summary line, then one line per problem (at most ``limit``).

    Args:
        report: from :func:`check_file` or a ``*_records`` function.
        limit: how many problems to list.

    Returns:
        ``"FILE: N rows, K valid, M invalid, C label conflicts dropped"`` and lines like
        ``"  line 17, field 'prompt': is empty or whitespace-only"``.
    """
    lines = [report.summary()]
    lines += [f"  {error}" for error in report.errors[:limit]]
    if len(report.errors) > limit:
        lines.append(f"  ... and {len(report.errors) - limit} more problems")
    if report.conflict_rows:
        shown = ", ".join(str(r) for r in report.conflict_rows[:limit])
        lines.append(f"  label conflicts ({report.unit}s): {shown}")
    return "\n".join(lines)
