"""Read json, jsonl, gzip'd json/jsonl, parquet and csv files into raw records.

File-level problems raise :class:`DataError` naming the file and, where there is one, the
line: a missing or unreadable file, a truncated gzip, another compression, non-UTF-8 bytes in a
json or csv file, invalid JSON in an array file, an array that is not of objects, a NUL byte or
a cell the csv parser rejects, a column named twice, a broken parquet file. Compression is
judged by the file's bytes: a gzip file reads whatever its name. JSON is read strictly: ``NaN``
and ``Infinity`` (which Python's reader accepts) and a key given twice in one object are
errors. In jsonl a line is a row, so a line that is not UTF-8, not valid JSON (e.g. the last
line cut off mid-object) or not an object is a *row* error: the loaders report it like any
invalid row and ``skip_invalid`` drops it.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from constrained_align.data.validate import DataError, RowError

FORMATS = {
    ".jsonl": "jsonl",
    ".jsonl.gz": "jsonl",
    ".json": "json",
    ".json.gz": "json",
    ".parquet": "parquet",
    ".csv": "csv",
    ".csv.gz": "csv",
}
"""File name ending → format; a ``.gz`` ending means gzip-compressed."""

UNITS = {"jsonl": "line", "json": "element", "parquet": "row", "csv": "line"}

CSV_FIELD_LIMIT = sys.maxsize
"""Largest csv cell accepted; the csv module's default (128 KiB) is below long model replies."""


@dataclass
class RawTable:
    """Records of one file with their 1-based row numbers and the rows that could not be parsed.

    Attributes:
        file: the path as given.
        unit: how row numbers count: ``line`` (jsonl, csv), ``element`` (JSON array), ``row``.
        records: parsed rows, keyed by the file's column names.
        row_numbers: the number of each record.
        errors: rows that could not be parsed at all (jsonl only).
    """

    file: str
    unit: str
    records: list[dict[str, Any]] = field(default_factory=list)
    row_numbers: list[int] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)

    @property
    def total_rows(self) -> int:
        """Parsed plus unparsable rows."""
        return len(self.records) + len({e.row for e in self.errors})


def file_format(path: str | Path) -> tuple[str, bool]:
    """``(format, gzipped)`` from the file name; DataError for an unsupported ending."""
    name = Path(path).name.lower()
    for ending in sorted(FORMATS, key=len, reverse=True):
        if name.endswith(ending):
            return FORMATS[ending], ending.endswith(".gz")
    raise DataError(f"{path}: unsupported file type; expected one of {', '.join(sorted(FORMATS))}")


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """All records of a json, jsonl, ``.json(l).gz``, parquet or csv file.

    Args:
        path: the file.

    Returns:
        One dict per row, keyed by the file's column names.

    Raises:
        DataError: the file cannot be read, or (jsonl) some line is not a readable JSON object.
    """
    table = read_table(path)
    if table.errors:
        shown = "; ".join(str(e) for e in table.errors[:5])
        raise DataError(f"{path}: {len(table.errors)} unreadable rows: {shown}")
    return table.records


def read_table(path: str | Path) -> RawTable:
    """Like :func:`read_records`, keeping row numbers and per-line parse errors (jsonl)."""
    fmt, gz = file_format(path)
    table = RawTable(file=str(path), unit=UNITS[fmt])
    if fmt == "parquet":
        _read_parquet(path, table)
    elif fmt == "jsonl":
        _read_jsonl(_read_lines(path, gz), table)
    else:
        text = _decode(b"".join(_read_lines(path, gz)), path)
        if fmt == "csv":
            _read_csv(text, table)
        else:
            _read_json(text, table)
    return table


#: Leading bytes of compressed files (a file is judged by its bytes, not its name).
COMPRESSED = {
    b"BZh": "bzip2",
    b"\xfd7zXZ\x00": "xz",
    b"\x28\xb5\x2f\xfd": "zstd",
    b"PK\x03\x04": "zip",
}


def _is_gzip(path: str | Path, named_gz: bool) -> bool:
    """Whether to read the file as gzip: its first bytes say so (whatever its name), or its
    name does (and reading it then says whether it really is).

    Raises:
        DataError: another compression, which the readers do not take.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return named_gz  # the reader below reports a missing or unreadable file
    if head.startswith(b"\x1f\x8b") or named_gz:  # a ".gz" that is not gzip fails below
        return True
    for magic, name in COMPRESSED.items():
        if head.startswith(magic):
            raise DataError(f"{path}: the file is {name}-compressed; decompress it first")
    return False


def _read_lines(path: str | Path, gz: bool) -> list[bytes]:
    """The file's lines as bytes; gzip streams (detected by their bytes) are read line by line
    to locate a truncation."""
    lines: list[bytes] = []
    gz = _is_gzip(path, gz)
    try:
        with gzip.open(path, "rb") if gz else open(path, "rb") as f:
            for line in f:
                lines.append(line)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected a data file") from None
    except PermissionError:
        raise DataError(f"{path}: not readable (permission denied)") from None
    except EOFError:
        raise DataError(
            f"{path}: truncated gzip file: the compressed stream ends without its end marker "
            f"after line {len(lines)} (the copy or download was cut off)"
        ) from None
    except (gzip.BadGzipFile, zlib.error) as err:
        raise DataError(f"{path}: not a valid gzip file ({err}) after line {len(lines)}") from None
    except OSError as err:
        raise DataError(f"{path}: cannot be read ({err.strerror or err})") from None
    return lines


def _utf8_error(data: bytes, err: UnicodeDecodeError) -> tuple[int, str]:
    """(1-based line, description) of a decoding error within ``data``."""
    line = data.count(b"\n", 0, err.start) + 1
    column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
    return line, f"not UTF-8 (byte 0x{data[err.start]:02x} at column {column})"


def _decode(data: bytes, path: str | Path) -> str:
    try:
        return data.decode("utf-8-sig")  # tolerate a byte-order mark (Excel writes one)
    except UnicodeDecodeError as err:
        line, what = _utf8_error(data, err)
        raise DataError(f"{path}: line {line}: {what}; re-save the file as UTF-8") from None


class _StrictJSONError(ValueError):
    """A JSON value the readers refuse although Python's json module accepts it."""


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, refusing a key given twice (json.loads would keep the last silently)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _StrictJSONError(f"key '{key}' appears twice in one object")
        out[key] = value
    return out


def _constant(name: str) -> Any:
    raise _StrictJSONError(f"{name} is not valid JSON; write null for a missing value")


def strict_json(text: str) -> Any:
    """``json.loads`` that refuses NaN/Infinity and duplicated keys (both valid in Python's
    reader, both ways for a file to mean something other than what it says)."""
    return json.loads(text, object_pairs_hook=_object, parse_constant=_constant)


def _read_jsonl(lines: list[bytes], table: RawTable) -> None:
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    for i, raw in enumerate(lines):
        number = i + 1
        if not raw.strip():
            continue  # blank lines are not rows (a trailing newline is common)
        try:
            text = raw.decode("utf-8-sig" if i == 0 else "utf-8")
        except UnicodeDecodeError as err:
            table.errors.append(RowError(number, None, _utf8_error(raw, err)[1], "line"))
            continue
        try:
            record = strict_json(text)
        except _StrictJSONError as err:
            table.errors.append(RowError(number, None, str(err), "line"))
            continue
        except json.JSONDecodeError as err:
            cut = i == last and _ends_early(err, text)
            message = (
                "line cut off mid-object (truncated file?)"
                if cut
                else f"invalid JSON ({err.msg} at column {err.colno})"
            )
            table.errors.append(RowError(number, None, message, "line"))
            continue
        if not isinstance(record, dict):
            kind = type(record).__name__
            table.errors.append(
                RowError(number, None, f"expected a JSON object, got {kind}", "line")
            )
            continue
        table.records.append(record)
        table.row_numbers.append(number)


def _ends_early(err: json.JSONDecodeError, text: str) -> bool:
    """Whether the JSON error is the text running out (a cut-off file), not a typo."""
    return err.pos >= len(text.rstrip()) or err.msg.startswith("Unterminated string")


def _read_json(text: str, table: RawTable) -> None:
    stripped = text.strip()
    try:
        data = strict_json(stripped)
    except _StrictJSONError as err:
        raise DataError(f"{table.file}: {err}") from None
    except json.JSONDecodeError as err:
        if stripped.startswith("{") and err.msg == "Extra data":
            # One object per line under a .json name (common on the hub): read it as jsonl.
            table.unit = "line"
            _read_jsonl(text.encode("utf-8").splitlines(keepends=True), table)
            return
        cut = " (file truncated?)" if _ends_early(err, stripped) else ""
        raise DataError(
            f"{table.file}: line {err.lineno}, column {err.colno}: invalid JSON ({err.msg}){cut}"
        ) from None
    if isinstance(data, dict) and len(stripped.splitlines()) == 1:
        table.unit = "line"  # a one-line jsonl file
        data = [data]
    elif not isinstance(data, list):
        raise DataError(
            f"{table.file}: the JSON is {_json_kind(data)}, expected an array of row objects "
            "(or one object per line, jsonl)"
        )
    for i, record in enumerate(data):
        if not isinstance(record, dict):
            raise DataError(
                f"{table.file}: element {i + 1} of the JSON array is {_json_kind(record)}, "
                "expected an object (the file must be an array of row objects)"
            )
        table.records.append(record)
        table.row_numbers.append(i + 1)


def _json_kind(value: Any) -> str:
    kinds = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    return kinds.get(type(value), "null" if value is None else "a number")


def _raise_csv_field_limit() -> None:
    """Lift the csv module's cell size limit to :data:`CSV_FIELD_LIMIT`."""
    try:
        csv.field_size_limit(CSV_FIELD_LIMIT)
    except OverflowError:
        # The limit is a C long, which is 32 bits on Windows even on 64-bit Python.
        csv.field_size_limit(min(CSV_FIELD_LIMIT, 2**31 - 1))


def _read_csv(text: str, table: RawTable) -> None:
    nul = text.find("\0")
    if nul >= 0:
        # Python < 3.11 refuses NUL bytes in csv and later versions keep them in the cell; refuse
        # them everywhere, since they mean a binary or mis-encoded file, not text.
        line = text.count("\n", 0, nul) + 1
        raise DataError(
            f"{table.file}: line {line}: contains a NUL byte; not a plain-text CSV file"
        )
    _raise_csv_field_limit()
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if not header:
            raise DataError(f"{table.file}: empty CSV file (no header row)")
        twice = sorted({name for name in header if header.count(name) > 1})
        if twice:
            raise DataError(f"{table.file}: line 1: the header names {twice} twice")
        start = reader.line_num + 1
        for values in reader:
            # A quoted cell can span lines: report the line the record starts on.
            number, start = start, reader.line_num + 1
            if not values:
                continue
            if len(values) != len(header):
                message = f"has {len(values)} fields, the header has {len(header)}"
                table.errors.append(RowError(number, None, message, "line"))
                continue
            table.records.append(dict(zip(header, values)))
            table.row_numbers.append(number)
    except csv.Error as err:
        raise DataError(
            f"{table.file}: line {reader.line_num}: not readable as CSV ({err})"
        ) from None


def _read_parquet(path: str | Path, table: RawTable) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not Path(path).exists():
        raise DataError(f"{path}: no such file")
    if Path(path).is_dir():
        raise DataError(f"{path}: is a directory, expected a data file")
    try:
        records = pq.read_table(path).to_pylist()
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{path}: not a readable parquet file ({err})") from None
    table.records = records
    table.row_numbers = list(range(1, len(records) + 1))
