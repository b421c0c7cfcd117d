"""Loaders for preference pairs: any json/jsonl/parquet file, chosen/rejected files, HH-RLHF and
PKU-SafeRLHF, all producing canonical rows (:mod:`constrained_align.data.schema`).

Each source has two levels:

- ``*_records(...) -> (rows, report)`` reads and validates without raising for bad rows, so
  callers such as ``constrained-align data check`` and the default-dataset builder can see every
  problem and count what was dropped;
- ``load_*(...) -> Dataset`` raises one :class:`DataError` on invalid rows, or with
  ``skip_invalid=True`` drops them and logs a warning.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from datasets import Dataset

from constrained_align.data.hh import Axis, chosen_rejected_row, hh_row, infer_axis
from constrained_align.data.readers import FORMATS, RawTable, file_format, read_table
from constrained_align.data.schema import PAIR_FIELDS, pairs_to_dataset
from constrained_align.data.validate import (
    DataError,
    RowChecker,
    ValidationReport,
    finish,
    validate_records,
)

PKU_ID = "PKU-Alignment/PKU-SafeRLHF"


def _file_of(path: str | Path | RawTable) -> str | Path:
    """The file named in messages and inspected for its format, axis and folder."""
    return path.file if isinstance(path, RawTable) else path


def _table(path: str | Path | RawTable) -> RawTable:
    """The file's table, reading it unless the caller already has (format detection does)."""
    return path if isinstance(path, RawTable) else read_table(path)


def _typed_table(path: str | Path | RawTable) -> RawTable:
    """Read a file whose ids and labels must keep their JSON/parquet types."""
    if file_format(_file_of(path))[0] == "csv":
        raise DataError(
            f"{_file_of(path)}: csv cells are untyped text, so ids and safety labels cannot be "
            "read reliably; convert the file to jsonl or parquet"
        )
    return _table(path)


def pairs_records(
    path: str | Path | RawTable,
    *,
    columns: Mapping[str, str] | None = None,
    source: str | None = None,
) -> tuple[list[dict[str, Any]], ValidationReport]:
    """Canonical rows and the validation report of a json/jsonl/parquet pair file.

    Args:
        path: the file (``.json``, ``.jsonl``, ``.json(l).gz``, ``.parquet``), or its table as
            already read by :func:`~constrained_align.data.readers.read_table`.
        columns: canonical name → file column, e.g. ``{"prompt": "question"}``.
        source: ``source`` of rows without one (default: the file name).

    Returns:
        ``(valid rows, report)``.

    Raises:
        DataError: the file cannot be read, or is a csv file.
    """
    table = _typed_table(path)
    return validate_records(
        table.records,
        columns=columns,
        file=table.file,
        row_numbers=table.row_numbers,
        unit=table.unit,
        source=source or Path(table.file).name,
        prior_errors=table.errors,
        total_rows=table.total_rows,
    )


def load_pairs(
    path: str | Path,
    *,
    columns: Mapping[str, str] | None = None,
    source: str | None = None,
    skip_invalid: bool = False,
) -> Dataset:
    """Canonical pairs from any json/jsonl/parquet file, with an optional column mapping.

    Args:
        path: the file.
        columns: canonical name → file column (fields not mapped keep their canonical name).
        source: ``source`` of rows without one (default: the file name).
        skip_invalid: drop invalid rows with a warning instead of raising.

    Returns:
        Canonical pairs; label-conflict rows are dropped and counted in the log.

    Raises:
        DataError: unreadable file, or invalid rows without ``skip_invalid``.
    """
    rows, report = pairs_records(path, columns=columns, source=source)
    finish(report, skip_invalid=skip_invalid)
    return pairs_to_dataset(rows)


def _convert(
    table: RawTable,
    convert: Callable[[RowChecker], dict[str, Any] | None],
    columns: Mapping[str, str] | None = None,
) -> tuple[list[dict[str, Any]], ValidationReport]:
    """Run a per-record converter, then validate the converted rows canonically."""
    converted, numbers, errors = [], [], list(table.errors)
    for record, number in zip(table.records, table.row_numbers):
        checker = RowChecker(record, number, table.unit, dict(columns or {}))
        row = convert(checker)
        if checker.errors or row is None:
            errors.extend(checker.errors)
        else:
            converted.append(row)
            numbers.append(number)
    return validate_records(
        converted,
        file=table.file,
        row_numbers=numbers,
        unit=table.unit,
        prior_errors=errors,
        total_rows=table.total_rows,
    )


def chosen_rejected_records(
    path: str | Path | RawTable,
    *,
    axis: Axis = "helpful",
    columns: Mapping[str, str] | None = None,
    source: str | None = None,
) -> tuple[list[dict[str, Any]], ValidationReport]:
    """Canonical rows and report of a prompt/chosen/rejected file (:func:`load_chosen_rejected`).

    Args:
        path: json, jsonl(.gz), parquet or csv file, or its already-read table.
        axis: which preference ``chosen`` expresses: ``"helpful"`` or ``"harmless"``.
        columns: canonical name → file column.
        source: ``source`` of rows without one (default: the file name).

    Returns:
        ``(valid rows, report)``; bad rows are reported, never raised.

    Raises:
        ValueError: unknown ``axis``.
        DataError: the file cannot be read at all.
    """
    if axis not in ("helpful", "harmless"):
        raise ValueError(f"axis must be 'helpful' or 'harmless', got {axis!r}")
    table = _table(path)
    default_source = source or Path(table.file).name
    return _convert(
        table,
        lambda c: chosen_rejected_row(c, axis=axis, default_source=default_source),
        columns,
    )


def load_chosen_rejected(
    path: str | Path,
    *,
    axis: Axis = "helpful",
    columns: Mapping[str, str] | None = None,
    source: str | None = None,
    skip_invalid: bool = False,
) -> Dataset:
    """Canonical pairs from a file with ``prompt``, ``chosen``, ``rejected`` columns.

    ``chosen`` is the preferred response on one axis: more helpful (``axis="helpful"``, sets
    ``better_response_id``) or less harmful (``axis="harmless"``, sets ``safer_response_id``).
    Optional ``context`` and ``source`` columns are kept. The response order is decided by a
    hash of the row (see :mod:`constrained_align.data.hh`).

    Args:
        path: json, jsonl(.gz), parquet or csv file.
        axis: which preference ``chosen`` expresses.
        columns: canonical name (``prompt``, ``chosen``, ``rejected``, ``context``, ``source``)
            → file column.
        source: ``source`` of rows without one (default: the file name).
        skip_invalid: drop invalid rows with a warning instead of raising.

    Returns:
        Canonical pairs.

    Raises:
        DataError: unreadable file, or invalid rows without ``skip_invalid``.
    """
    rows, report = chosen_rejected_records(path, axis=axis, columns=columns, source=source)
    finish(report, skip_invalid=skip_invalid)
    return pairs_to_dataset(rows)


def hh_rlhf_records(
    path: str | Path | RawTable, *, axis: Axis | None = None, source: str | None = None
) -> tuple[list[dict[str, Any]], ValidationReport]:
    """Canonical rows and report of an HH-RLHF file (see :func:`load_hh_rlhf`).

    Args:
        path: e.g. ``hh-rlhf/helpful-base/test.jsonl.gz``, or its already-read table.
        axis: ``"helpful"`` or ``"harmless"``; None infers it from the path.
        source: default ``"hh-rlhf/<folder>"``.

    Returns:
        ``(valid rows, report)``; bad rows are reported, never raised.

    Raises:
        DataError: the file cannot be read, or the axis is neither given nor in the path.
    """
    file = _file_of(path)
    axis = axis or infer_axis(file)
    if axis not in ("helpful", "harmless"):
        raise DataError(
            f"{file}: cannot tell helpful-base from harmless-base data from the path; "
            "pass axis='helpful' or axis='harmless'"
        )
    if source is None:
        folder = Path(file).parent.name
        named = any(word in folder.lower() for word in ("helpful", "harmless"))
        source = f"hh-rlhf/{folder}" if named else "hh-rlhf"
    return _convert(_table(path), lambda c: hh_row(c, axis=axis, source=source))


def load_hh_rlhf(
    path: str | Path,
    *,
    axis: Axis | None = None,
    source: str | None = None,
    skip_invalid: bool = False,
) -> Dataset:
    """Canonical pairs from an Anthropic HH-RLHF ``chosen``/``rejected`` transcript file.

    Each transcript is split into ``context`` (earlier turns), ``prompt`` (final Human turn)
    and the final Assistant reply (rules in :mod:`constrained_align.data.hh`). On helpful-base,
    ``chosen`` is the more helpful reply (sets ``better_response_id``); on harmless-base it is
    the less harmful one (sets ``safer_response_id``). Rows whose transcripts do not share the
    same conversation, have an empty reply, or identical replies are invalid.

    Args:
        path: e.g. ``hh-rlhf/helpful-base/test.jsonl.gz``.
        axis: ``"helpful"`` or ``"harmless"``; None infers it from the path.
        source: default ``"hh-rlhf/<folder>"``, e.g. ``"hh-rlhf/harmless-base"``.
        skip_invalid: drop invalid rows with a warning instead of raising.

    Returns:
        Canonical pairs.

    Raises:
        DataError: unreadable file, unknown axis, or invalid rows without ``skip_invalid``.
    """
    rows, report = hh_rlhf_records(path, axis=axis, source=source)
    finish(report, skip_invalid=skip_invalid)
    return pairs_to_dataset(rows)


def _looks_local(path_or_id: str | Path) -> bool:
    text = str(path_or_id)
    if isinstance(path_or_id, Path) or Path(text).exists():
        return True
    is_file_name = any(text.lower().endswith(ending) for ending in FORMATS)
    return is_file_name or text.startswith(("/", "./", "../", "~"))


def _local_pku_file(path: Path, split: str) -> Path:
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_file():
        return path
    found = sorted(
        p
        for p in path.rglob(f"{split}*")
        if p.is_file() and any(p.name.lower().endswith(e) for e in FORMATS)
    )
    if len(found) != 1:
        listed = ", ".join(str(p) for p in found) or "none"
        raise DataError(
            f"{path}: expected exactly one data file for split {split!r}, found {listed}; "
            "pass the file itself"
        )
    return found[0]


def pku_saferlhf_records(
    path_or_id: str | Path = PKU_ID, *, revision: str = "v0", split: str = "train"
) -> tuple[list[dict[str, Any]], ValidationReport]:
    """Canonical rows and report of PKU-SafeRLHF (see :func:`load_pku_saferlhf`).

    Args:
        path_or_id: local file/folder, or hub dataset id.
        revision: hub revision (ignored for local data).
        split: hub split, or the file-name prefix to look for in a local folder.

    Returns:
        ``(valid rows, report)``; bad rows are reported, never raised.

    Raises:
        DataError: the data cannot be found or read at all.
    """
    if _looks_local(path_or_id):
        file = _local_pku_file(Path(path_or_id).expanduser(), split)
        table = _typed_table(file)
        records, numbers, unit, name = table.records, table.row_numbers, table.unit, str(file)
    else:
        records, name = _pku_from_hub(str(path_or_id), revision, split)
        numbers, unit, table = list(range(1, len(records) + 1)), "row", None
    # PKU carries more columns (harm categories, severity, sources); keep the canonical ones.
    records = [{k: v for k, v in r.items() if k in PAIR_FIELDS} for r in records]
    return validate_records(
        records,
        file=name,
        row_numbers=numbers,
        unit=unit,
        source="pku-saferlhf",
        prior_errors=table.errors if table else (),
        total_rows=table.total_rows if table else None,
    )


def _pku_from_hub(dataset_id: str, revision: str, split: str) -> tuple[list[dict[str, Any]], str]:
    """Rows from the hub; only reached online (not testable offline, so kept thin)."""
    import datasets

    try:
        ds = datasets.load_dataset(dataset_id, revision=revision, split=split)
    except Exception as err:  # network, auth and missing-revision errors all mean "not here"
        raise DataError(
            f"{dataset_id}@{revision} ({split}): could not be loaded from the Hugging Face hub "
            f"({type(err).__name__}: {err}); offline, pass a local file or folder instead"
        ) from err
    keep = [c for c in ds.column_names if c in PAIR_FIELDS]
    return ds.select_columns(keep).to_list(), f"{dataset_id}@{revision}:{split}"


def load_pku_saferlhf(
    path_or_id: str | Path = PKU_ID,
    *,
    revision: str = "v0",
    split: str = "train",
    skip_invalid: bool = False,
) -> Dataset:
    """PKU-SafeRLHF as canonical pairs, from a local file/folder or (online) the hub.

    A path that exists, or that looks like one (a data-file ending, ``/``, ``./``, ``~``),
    loads offline; a folder must hold exactly one ``{split}*`` data file. Anything else is a
    hub id passed to :func:`datasets.load_dataset` with ``revision`` and ``split``.
    ``revision="v0"`` is the default because it is what Safe RLHF's code was written against;
    the hub's default branch has since moved to a newer release (v1) with different rows, so
    treat that as a separate dataset (ALGORITHMS.md §2.4, pitfalls). Columns outside the
    canonical schema are dropped; ``source`` is ``"pku-saferlhf"``.

    Args:
        path_or_id: local file/folder, or hub dataset id.
        revision: hub revision (ignored for local data).
        split: hub split, or the file-name prefix to look for in a local folder.
        skip_invalid: drop invalid rows with a warning instead of raising.

    Returns:
        Canonical pairs; label-conflict rows are dropped and counted in the log.

    Raises:
        DataError: unreadable or unreachable data, or invalid rows without ``skip_invalid``.
    """
    rows, report = pku_saferlhf_records(path_or_id, revision=revision, split=split)
    finish(report, skip_invalid=skip_invalid)
    return pairs_to_dataset(rows)
