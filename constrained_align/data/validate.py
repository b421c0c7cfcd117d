"""Row validation for the canonical pair schema, with reports that name file, row and field.

Every loader funnels its rows through here, so a broken file fails the same way whatever its
format: one :class:`DataError` whose message names the file, the first bad rows (row number and
field) and how many rows of how many are bad, and points at ``skip_invalid`` / ``--skip-invalid``.
With ``skip_invalid=True`` the bad rows are dropped, a warning is logged and the
:class:`ValidationReport` says what was dropped.

Row numbers are 1-based and say their convention: ``line`` for jsonl and csv (the file line a row
starts on), ``element`` for a JSON array, ``row`` for parquet and in-memory records.

Label conflicts (ALGORITHMS.md §2.3: the "safer" response is labelled unsafe while the other is
labelled safe) are not errors: such rows are dropped, counted in the report and logged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from constrained_align.data.fields import (
    check_context,
    check_id,
    check_label,
    check_optional_text,
    check_text,
    close_column,
    missing_message,
)
from constrained_align.data.schema import (
    OPTIONAL_FIELDS,
    REQUIRED_FIELDS,
    is_label_conflict,
)

logger = logging.getLogger(__name__)

MAX_LISTED = 5
"""How many bad rows a :class:`DataError` message lists before "and N more"."""


class DataError(ValueError):
    """A data file cannot be read or holds invalid rows; the message says where and why."""


@dataclass(frozen=True)
class RowError:
    """One problem in one row.

    Attributes:
        row: 1-based row number in the unit's convention.
        field: the file's column (or ``None`` when the whole row is unreadable).
        message: what is wrong, phrased for the person who has to fix the file.
        unit: ``"line"``, ``"element"`` or ``"row"``: how ``row`` counts.
    """

    row: int
    field: str | None
    message: str
    unit: str = "row"

    def __str__(self) -> str:
        where = f"{self.unit} {self.row}"
        if self.field is None:
            return f"{where}: {self.message}"
        return f"{where}, field '{self.field}': {self.message}"


@dataclass
class ValidationReport:
    """What validating one file found.

    ``total_rows = valid_rows + invalid_rows + conflicts_dropped``: a label-conflict row is
    well-formed but dropped, so it is neither valid (kept) nor invalid.

    Attributes:
        file: the file (or a description of the in-memory records).
        total_rows: rows read.
        valid_rows: rows kept.
        errors: every problem found, in row order (a row can have several).
        conflicts_dropped: rows dropped as label conflicts.
        conflict_rows: their row numbers.
        unit: how row numbers count (see :class:`RowError`).
    """

    file: str
    total_rows: int = 0
    valid_rows: int = 0
    errors: list[RowError] = field(default_factory=list)
    conflicts_dropped: int = 0
    conflict_rows: list[int] = field(default_factory=list)
    unit: str = "row"

    @property
    def invalid_rows(self) -> int:
        """Number of distinct rows with at least one error."""
        return len({e.row for e in self.errors})

    def summary(self) -> str:
        """One line: ``FILE: N rows, K valid, M invalid, C label conflicts dropped``."""
        return (
            f"{self.file}: {self.total_rows} rows, {self.valid_rows} valid, "
            f"{self.invalid_rows} invalid, {self.conflicts_dropped} label conflicts dropped"
        )

    def problem(self, *, skip_invalid: bool) -> str | None:
        """Why the file cannot be used, or None: invalid rows (unless ``skip_invalid``) or no
        usable row at all. ``data check`` and every loader decide with this."""
        if self.errors and not skip_invalid:
            return self.error_message()
        if self.valid_rows == 0:
            return self.no_usable_rows()
        return None

    def no_usable_rows(self) -> str:
        """The :class:`DataError` text for a file that leaves no usable row."""
        why = []
        if self.invalid_rows:
            why.append(f"{self.invalid_rows} invalid")
        if self.conflicts_dropped:
            why.append(f"{self.conflicts_dropped} label conflicts (dropped)")
        detail = f": {', '.join(why)}" if why else ""
        return f"{self.file}: no usable row among its {self.total_rows} rows{detail}"

    def error_message(self) -> str:
        """The :class:`DataError` text for a report with invalid rows: one line when one row is
        invalid, else a summary line and the rows."""
        bad_rows = sorted({e.row for e in self.errors})
        if len(self.errors) == 1:
            return (
                f"{self.file}: 1 of {self.total_rows} rows are invalid: {self.errors[0]} (fix "
                "it, or drop invalid rows: --skip-invalid, or skip_invalid=True in Python)"
            )
        shown = [e for e in self.errors if e.row in set(bad_rows[:MAX_LISTED])]
        lines = [
            f"{self.file}: {self.invalid_rows} of {self.total_rows} rows are invalid "
            f"(row numbers are 1-based {self.unit}s):"
        ]
        lines += [f"  {e}" for e in shown]
        if len(bad_rows) > MAX_LISTED:
            lines.append(f"  ... and {len(bad_rows) - MAX_LISTED} more invalid rows")
        lines.append(
            "Fix these rows, or drop them with skip_invalid=True (CLI: --skip-invalid); "
            "`constrained-align data check FILE` lists them all."
        )
        return "\n".join(lines)


def finish(report: ValidationReport, *, skip_invalid: bool) -> ValidationReport:
    """Raise on invalid rows unless ``skip_invalid``; otherwise log what was dropped.

    Args:
        report: a completed report.
        skip_invalid: drop invalid rows with a warning instead of raising.

    Returns:
        The same report.

    Raises:
        DataError: the report has invalid rows and ``skip_invalid`` is False.
    """
    problem = report.problem(skip_invalid=skip_invalid)
    if problem:
        raise DataError(problem)
    if report.errors:
        logger.warning(
            "%s: dropped %d invalid of %d rows (first: %s)",
            report.file,
            report.invalid_rows,
            report.total_rows,
            report.errors[0],
        )
    if report.conflicts_dropped:
        logger.warning(
            "%s: dropped %d label-conflict rows (safer response labelled unsafe, other safe)",
            report.file,
            report.conflicts_dropped,
        )
    return report


class RowChecker:
    """Collects the errors of one row while its fields are normalised."""

    def __init__(self, record: Mapping[str, Any], row: int, unit: str, columns: Mapping[str, str]):
        self.record, self.row, self.unit, self.columns = record, row, unit, columns
        self.errors: list[RowError] = []

    def column(self, name: str) -> str:
        """The file column that holds canonical field ``name``."""
        return self.columns.get(name, name)

    def error(self, name: str | None, message: str) -> None:
        """Record an error on canonical field ``name`` (reported under its file column)."""
        self.errors.append(
            RowError(self.row, self.column(name) if name else None, message, self.unit)
        )

    def get(
        self,
        name: str,
        check: Callable[[Any], tuple[Any, str | None]],
        *,
        required: bool,
        known: Sequence[str] = (),
    ) -> Any:
        """Read canonical field ``name`` from its file column, check and normalise it.

        Args:
            name: canonical field name.
            check: returns ``(normalised value, error message or None)``.
            required: whether a missing column is an error (an optional one is reported only
                when a misspelt look-alike column is present).
            known: file columns the schema uses, never offered as misspellings.

        Returns:
            The normalised value, or None when missing or invalid.
        """
        col = self.column(name)
        if col not in self.record:
            # An absent optional column is fine, unless a look-alike says it was misspelt.
            close = close_column(self.record, col, known)
            if required or close is not None:
                self.errors.append(RowError(self.row, col, missing_message(col, close), self.unit))
            return None
        value, message = check(self.record[col])
        if message:
            self.error(name, message)
        return value


_CHECKS = {
    "prompt": check_text,
    "response_0": check_text,
    "response_1": check_text,
    "better_response_id": check_id,
    "safer_response_id": check_id,
    "is_response_0_safe": check_label,
    "is_response_1_safe": check_label,
    "context": check_context,
    "source": check_optional_text,
}


def check_pair(checker: RowChecker, *, default_source: str) -> dict[str, Any]:
    """Check one raw record against the canonical schema; returns the normalised row."""
    known = [checker.column(n) for n in (*REQUIRED_FIELDS, *OPTIONAL_FIELDS)]
    row = {
        name: checker.get(name, _CHECKS[name], required=name in REQUIRED_FIELDS, known=known)
        for name in (*REQUIRED_FIELDS, *OPTIONAL_FIELDS)
    }
    row["context"] = row["context"] or []
    row["source"] = row["source"] or default_source
    r0, r1 = row["response_0"], row["response_1"]
    if r0 is not None and r1 is not None and r0.strip() == r1.strip():
        checker.error(
            "response_1", "identical to response_0 (a pair needs two different responses)"
        )
    has_id = row["better_response_id"] is not None or row["safer_response_id"] is not None
    has_label = row["is_response_0_safe"] is not None or row["is_response_1_safe"] is not None
    ids_readable = not any(
        e.field in (checker.column("better_response_id"), checker.column("safer_response_id"))
        for e in checker.errors
    )
    if not has_id and not has_label and ids_readable:
        checker.error(
            "better_response_id",
            "better_response_id and safer_response_id are both missing/null and neither response "
            "has a safety label: the row carries no preference",
        )
    return row


def validate_records(
    records: Sequence[Mapping[str, Any]],
    *,
    columns: Mapping[str, str] | None = None,
    file: str = "<records>",
    row_numbers: Sequence[int] | None = None,
    unit: str = "row",
    source: str | None = None,
    prior_errors: Sequence[RowError] = (),
    total_rows: int | None = None,
) -> tuple[list[dict[str, Any]], ValidationReport]:
    """Validate raw records of the canonical pair schema and normalise the valid ones.

    Args:
        records: raw rows as read from a file (dicts keyed by the file's column names).
        columns: canonical name → file column name, for files that name fields differently.
        file: shown in every message.
        row_numbers: 1-based number of each record (default 1, 2, ...).
        unit: how ``row_numbers`` count: ``"line"``, ``"element"`` or ``"row"``.
        source: ``source`` of rows without one (default: ``file``).
        prior_errors: rows the reader could not parse (bad JSON, not UTF-8), counted as invalid.
        total_rows: rows in the file including unparsable ones (default: records + prior rows).

    Returns:
        ``(rows, report)``: the valid, non-conflicting rows in canonical form, and the report.
        Nothing is raised for bad rows; pass the report to :func:`finish` for that.
    """
    columns = dict(columns or {})
    numbers = list(row_numbers) if row_numbers is not None else list(range(1, len(records) + 1))
    report = ValidationReport(file=file, unit=unit, errors=list(prior_errors))
    report.total_rows = (
        total_rows
        if total_rows is not None
        else (len(records) + len({e.row for e in prior_errors}))
    )
    rows = []
    for record, number in zip(records, numbers):
        checker = RowChecker(record, number, unit, columns)
        row = check_pair(checker, default_source=source or file)
        if checker.errors:
            report.errors.extend(checker.errors)
        elif is_label_conflict(row):
            report.conflicts_dropped += 1
            report.conflict_rows.append(number)
        else:
            rows.append(row)
    report.errors.sort(key=lambda e: e.row)
    report.valid_rows = len(rows)
    return rows, report
