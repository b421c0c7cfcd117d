"""File-level problems: each raises one DataError (or a row error in jsonl) naming file and line."""

from __future__ import annotations

import csv
import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from data_helpers import good, write_jsonl

from constrained_align.data import DataError, load_pairs, pairs_records, read_records, readers
from constrained_align.data.readers import read_table


def _lines(rows) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def test_truncated_jsonl_last_line_is_named(tmp_path):
    path = tmp_path / "cut.jsonl"
    path.write_bytes(_lines([good(1), good(2), good(3)]) + b'{"prompt": "half a ro')
    with pytest.raises(DataError) as info:
        load_pairs(path)
    message = str(info.value)
    assert str(path) in message and "line 4: line cut off mid-object (truncated file?)" in message
    assert "1 of 4 rows are invalid" in message
    assert len(load_pairs(path, skip_invalid=True)) == 3


def test_truncated_gzip_names_file_and_line(tmp_path):
    data = gzip.compress(_lines(good(i) for i in range(200)))
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as info:
        load_pairs(path)
    message = str(info.value)
    assert str(path) in message and "truncated gzip file" in message
    assert "after line " in message


def test_not_gzip_at_all(tmp_path):
    path = tmp_path / "plain.jsonl.gz"
    path.write_bytes(_lines([good(1)]))
    with pytest.raises(DataError, match=r"plain\.jsonl\.gz: not a valid gzip file"):
        load_pairs(path)


def test_non_utf8_jsonl_line_is_a_row_error(tmp_path):
    path = tmp_path / "latin1.jsonl"
    bad = json.dumps(good(2, prompt="caf\u00e9"), ensure_ascii=False).encode("latin-1")
    path.write_bytes(_lines([good(1)]) + bad + b"\n" + _lines([good(3)]))
    with pytest.raises(DataError) as info:
        load_pairs(path)
    message = str(info.value)
    assert str(path) in message and "line 2: not UTF-8 (byte 0xe9" in message
    assert "1 of 3 rows are invalid" in message
    assert len(load_pairs(path, skip_invalid=True)) == 2


@pytest.mark.parametrize("suffix", [".json", ".csv"])
def test_non_utf8_json_or_csv_file_names_line(tmp_path, suffix):
    path = tmp_path / f"latin1{suffix}"
    text = (
        '[\n{"prompt": "ok"},\n{"prompt": "caf\u00e9"}\n]\n'
        if suffix == ".json"
        else ("prompt\nok\ncaf\u00e9\n")
    )
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(DataError, match=rf"latin1\{suffix}: line 3: not UTF-8 \(byte 0xe9"):
        read_records(path)


def test_invalid_json_row_in_jsonl(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_bytes(_lines([good(1)]) + b'{"prompt": }\n' + _lines([good(3)]))
    with pytest.raises(DataError, match=r"line 2: invalid JSON \(Expecting value at column 12\)"):
        load_pairs(path)
    _, report = pairs_records(path)
    assert (report.total_rows, report.valid_rows, report.invalid_rows) == (3, 2, 1)


def test_jsonl_line_that_is_not_an_object(tmp_path):
    path = tmp_path / "list.jsonl"
    path.write_bytes(_lines([good(1), [1, 2]]))
    with pytest.raises(DataError, match=r"line 2: expected a JSON object, got list"):
        load_pairs(path)


def test_invalid_json_in_array_file_names_line(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('[\n  {"prompt": "a"},\n  {"prompt" "b"}\n]\n')
    with pytest.raises(DataError, match=r"broken\.json: line 3, column 13: invalid JSON"):
        read_records(path)


def test_truncated_json_array(tmp_path):
    path = tmp_path / "cut.json"
    path.write_text(json.dumps([good(1), good(2)], indent=1)[:-40])
    with pytest.raises(
        DataError, match=r"cut\.json: line \d+, column \d+: invalid JSON .*truncated"
    ):
        read_records(path)


@pytest.mark.parametrize(
    ("content", "phrase"),
    [
        ('"just a string"', "the JSON is a string, expected an array of row objects"),
        ('{\n "data": [{"prompt": "x"}]\n}', "the JSON is an object, expected an array"),
        ('[{"prompt": "x"}, 3]', "element 2 of the JSON array is a number, expected an object"),
        ('[["prompt", "x"]]', "element 1 of the JSON array is an array"),
    ],
)
def test_json_that_is_not_an_array_of_objects(tmp_path, content, phrase):
    path = tmp_path / "shape.json"
    path.write_text(content)
    with pytest.raises(DataError) as info:
        load_pairs(path)
    assert str(path) in str(info.value) and phrase in str(info.value)


def test_json_array_rows_are_numbered_by_element(tmp_path):
    path = tmp_path / "array.json"
    path.write_text(json.dumps([good(1), good(2, response_0="")]))
    with pytest.raises(DataError, match=r"element 2, field 'response_0'"):
        load_pairs(path)


def test_jsonl_content_under_json_name(tmp_path):
    path = write_jsonl(tmp_path / "lines.json", [good(1), good(2)])
    assert len(load_pairs(path)) == 2


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(DataError, match=r"nope\.jsonl: no such file"):
        load_pairs(tmp_path / "nope.jsonl")
    folder = tmp_path / "folder.jsonl"
    folder.mkdir()
    with pytest.raises(DataError, match=r"folder\.jsonl: is a directory"):
        load_pairs(folder)
    with pytest.raises(DataError, match=r"nope\.parquet: no such file"):
        load_pairs(tmp_path / "nope.parquet")


def test_unsupported_type_and_csv_pairs(tmp_path):
    with pytest.raises(DataError, match=r"data\.txt: unsupported file type"):
        read_records(tmp_path / "data.txt")
    path = tmp_path / "pairs.csv"
    path.write_text("prompt,response_0,response_1,better_response_id\np,a,b,0\n")
    with pytest.raises(DataError, match=r"pairs\.csv: csv cells are untyped"):
        load_pairs(path)


def test_bad_parquet(tmp_path):
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"PAR1 this is not parquet at all")
    with pytest.raises(DataError, match=r"bad\.parquet: not a readable parquet file"):
        load_pairs(path)


def test_parquet_with_nulls_and_row_numbers(tmp_path):
    table = pa.table(
        {
            "prompt": ["p1", "p2", "p3"],
            "response_0": ["a", "a", "a"],
            "response_1": ["b", "b", "b"],
            "better_response_id": pa.array([0.0, None, 1.0]),  # nullable ints stored as floats
            "safer_response_id": pa.array([None, 1, 7], pa.int64()),
            "is_response_0_safe": pa.array([True, None, False]),
        }
    )
    path = tmp_path / "pairs.parquet"
    pq.write_table(table, path)
    with pytest.raises(DataError, match=r"row 3, field 'safer_response_id': must be 0 or 1"):
        load_pairs(path)
    ds = load_pairs(path, skip_invalid=True)
    assert ds["better_response_id"] == [0, None] and ds["safer_response_id"] == [None, 1]


def test_csv_rows_are_numbered_by_starting_line(tmp_path):
    path = tmp_path / "prompts.csv"
    path.write_text('prompt,extra\n"two\nlines",x\nthird,y,surplus\nfourth,z\n')
    table = read_table(path)
    assert table.row_numbers == [2, 5] and table.records[0]["prompt"] == "two\nlines"
    assert str(table.errors[0]) == "line 4: has 3 fields, the header has 2"
    with pytest.raises(DataError, match=r"prompts\.csv: 1 unreadable rows: line 4: has 3 fields"):
        read_records(path)


@pytest.fixture
def csv_limit():
    """Restore the csv module's process-wide cell limit after a test changes it."""
    old = csv.field_size_limit()
    yield
    csv.field_size_limit(old)


def test_csv_nul_byte_names_file_and_line(tmp_path):
    path = tmp_path / "nul.csv"
    path.write_bytes(b"prompt,extra\nfine,x\nbro\0ken,y\n")
    with pytest.raises(DataError) as info:
        read_table(path)
    assert str(info.value) == f"{path}: line 3: contains a NUL byte; not a plain-text CSV file"


def test_csv_parser_error_names_file_and_line(tmp_path, monkeypatch, csv_limit):
    path = tmp_path / "big.csv"
    path.write_text("prompt,extra\nshort,x\n" + "y" * 20 + ",z\n")
    monkeypatch.setattr(readers, "CSV_FIELD_LIMIT", 10)
    with pytest.raises(DataError) as info:
        read_table(path)
    assert str(info.value) == (
        f"{path}: line 3: not readable as CSV (field larger than field limit (10))"
    )


def test_csv_cells_above_the_default_limit_are_read(tmp_path, csv_limit):
    csv.field_size_limit(131072)  # the csv module's default
    path = tmp_path / "long.csv"
    path.write_text("prompt,extra\n" + "y" * 200_000 + ",z\n")
    assert read_table(path).records == [{"prompt": "y" * 200_000, "extra": "z"}]
