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
from constrained_align.data.readers import RawTable, read_table
from constrained_align.data.schema import pairs_to_dataset
from constrained_align.data.validate import ValidationReport, finish

Format = Literal["auto", "pairs", "hh-rlhf", "pku", "chosen-rejected"]
FORMATS: tuple[str, ...] = ("auto", "pairs", "hh-rlhf", "pku", "chosen-rejected")


def detect_format(path: str | Path | RawTable, columns: Mapping[str, str] | None = None) -> str:
    """``hh-rlhf`` (chosen/rejected transcripts), ``chosen-rejected`` (with a prompt) or ``pairs``.

    Decided from the first row's columns (after the canonical → file ``columns`` mapping).

    Args:
        path: the file, or its table as already read by
            :func:`~constrained_align.data.readers.read_table` (then nothing is read again).
        columns: canonical name → file column.

    Returns:
        The format name, as accepted by :func:`file_records`.

    Raises:
        DataError: the file cannot be read.
    """
    columns = columns or {}
    table = path if isinstance(path, RawTable) else read_table(path)
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
    if fmt == "pku":
        return pku_saferlhf_records(Path(path))
    source: str | Path | RawTable = path
    if fmt == "auto":
        # Detection needs the rows anyway; hand the table on so the file is read only once.
        source = read_table(path)
        fmt = detect_format(source, columns)  # type: ignore[assignment]
    if fmt == "hh-rlhf":
        # The axis only decides which id is set; any axis checks the same things.
        return hh_rlhf_records(source, axis=infer_axis(path) or "helpful")
    if fmt == "chosen-rejected":
        return chosen_rejected_records(source, columns=columns)
    return pairs_records(source, columns=columns)


def check_file(
    path: str | Path, *, columns: Mapping[str, str] | None = None, fmt: Format = "auto"
) -> ValidationReport:
    """Validate a data file the way the matching loader would, without raising for bad rows.

    Args:
        path: the file.
        columns: canonical name → file column.
        fmt: as in :func:`file_records`.

    Returns:
        The validation report.

    Raises:
        DataError: the file cannot be read at all.
    """
    return file_records(path, columns=columns, fmt=fmt)[1]


def load_file(
    path: str | Path,
    *,
    columns: Mapping[str, str] | None = None,
    fmt: Format = "auto",
    skip_invalid: bool = False,
) -> Dataset:
    """Canonical rows of any supported pair file (see :func:`file_records` for formats).

    Args:
        path: the file.
        columns: canonical name → file column.
        fmt: ``pairs``, ``pku``, ``hh-rlhf``, ``chosen-rejected`` or ``auto``.
        skip_invalid: drop invalid rows with a warning instead of raising.

    Returns:
        Canonical pairs.

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
