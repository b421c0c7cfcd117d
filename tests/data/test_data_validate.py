"""Row validation: every malformed-row case names file, row and field and counts the bad rows."""

from __future__ import annotations

import logging

import pytest
from data_helpers import DROP, GOOD, good, write_jsonl

from constrained_align.data import DataError, load_pairs, pairs_records, validate_records

# (case, changes to row 3 of 4, field named, phrase in the message)
BAD_ROWS = [
    ("missing field", {"prompt": DROP}, "prompt", "missing field 'prompt'"),
    (
        "misspelt field",
        {"better_response_id": DROP, "beter_response_id": 0},
        "better_response_id",
        "missing field 'better_response_id' (the file has 'beter_response_id'",
    ),
    ("label as string", {"is_response_0_safe": "yes"}, "is_response_0_safe", "got a string 'yes'"),
    ("label as int", {"is_response_1_safe": 1}, "is_response_1_safe", "expected true, false or"),
    ("id as string", {"safer_response_id": "1"}, "safer_response_id", "got a string '1'"),
    ("id outside 0/1", {"better_response_id": 2}, "better_response_id", "must be 0 or 1"),
    ("bool id", {"better_response_id": True}, "better_response_id", "got a bool (true)"),
    ("fractional id", {"better_response_id": 0.5}, "better_response_id", "expected 0, 1 or null"),
    ("prompt not text", {"prompt": 42}, "prompt", "expected a string, got a number"),
    ("empty prompt", {"prompt": "  \n "}, "prompt", "empty or whitespace-only"),
    ("empty response", {"response_0": ""}, "response_0", "empty or whitespace-only"),
    ("null response", {"response_1": None}, "response_1", "is null"),
    ("identical responses", {"response_1": GOOD["response_0"]}, "response_1", "identical"),
    (
        "both ids missing",
        {
            "better_response_id": None,
            "safer_response_id": DROP,
            "is_response_0_safe": None,
            "is_response_1_safe": DROP,
        },
        "better_response_id",
        "both missing/null",
    ),
    ("context not a list", {"context": "Hi"}, "context", "expected a list"),
    ("context bad role", {"context": [{"role": "bot", "content": "x"}]}, "context", "role 'bot'"),
    ("context bad message", {"context": [{"role": "user"}]}, "context", "exactly 'role' and"),
    ("source not text", {"source": 3}, "source", "expected a string or null"),
]


@pytest.mark.parametrize(
    ("case", "changes", "field", "phrase"), BAD_ROWS, ids=[b[0] for b in BAD_ROWS]
)
def test_bad_row_names_file_row_field_and_count(tmp_path, case, changes, field, phrase):
    path = write_jsonl(tmp_path / "pairs.jsonl", [good(1), good(2), good(3, **changes), good(4)])
    with pytest.raises(DataError) as info:
        load_pairs(path)
    message = str(info.value)
    assert str(path) in message
    assert f"line 3, field '{field}': " in message
    assert phrase in message
    assert "1 of 4 rows are invalid" in message
    assert "--skip-invalid" in message and "skip_invalid=True" in message
    # The same row is dropped, and counted, with skip_invalid.
    assert len(load_pairs(path, skip_invalid=True)) == 3
    _, report = pairs_records(path)
    assert (report.total_rows, report.valid_rows, report.invalid_rows) == (4, 3, 1)


def test_accepted_values_and_normalisation(tmp_path):
    rows = [
        good(1, better_response_id=1.0, safer_response_id=None),  # parquet-with-nulls floats
        good(2, better_response_id=None, safer_response_id=0, is_response_0_safe=None),
        good(3, is_response_0_safe=DROP, is_response_1_safe=DROP, extra_column="ignored"),
        good(4, context=[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": ""}]),
        # No preference id, but labels: still a row (it trains the cost model's sign terms).
        good(5, better_response_id=None, safer_response_id=None, is_response_1_safe=False),
    ]
    ds = load_pairs(write_jsonl(tmp_path / "ok.jsonl", rows), source="mine")
    assert ds["better_response_id"] == [1, None, 0, 0, None]
    assert ds["safer_response_id"] == [None, 0, 1, 1, None]
    assert ds["is_response_0_safe"] == [True, None, None, True, True]
    assert ds["context"][0] == [] and ds["context"][3][1] == {"role": "assistant", "content": ""}
    assert set(ds["source"]) == {"mine"}
    assert ds.features["better_response_id"].dtype == "int8"
    assert ds.features["is_response_0_safe"].dtype == "bool"


def test_source_defaults_to_file_name_and_row_source_wins(tmp_path):
    path = write_jsonl(tmp_path / "mix.jsonl", [good(1), good(2, source="elsewhere")])
    assert load_pairs(path)["source"] == ["mix.jsonl", "elsewhere"]


def test_message_lists_first_five_bad_rows_and_counts_all(tmp_path):
    rows = [good(i, prompt="") if i % 2 else good(i) for i in range(1, 17)]  # 8 bad of 16
    path = write_jsonl(tmp_path / "many.jsonl", rows)
    with pytest.raises(DataError) as info:
        load_pairs(path)
    message = str(info.value)
    assert "8 of 16 rows are invalid" in message
    for line in (1, 3, 5, 7, 9):
        assert f"line {line}, field 'prompt'" in message
    assert "line 11," not in message and "and 3 more invalid rows" in message


def test_skip_invalid_drops_counts_and_warns(tmp_path, caplog):
    rows = [good(1), good(2, prompt=""), good(3, better_response_id=5), good(4), good(5)]
    path = write_jsonl(tmp_path / "some-bad.jsonl", rows)
    with caplog.at_level(logging.WARNING, logger="constrained_align.data.validate"):
        ds = load_pairs(path, skip_invalid=True)
    assert len(ds) == 3
    assert "dropped 2 invalid of 5 rows" in caplog.text and str(path) in caplog.text
    _, report = pairs_records(path)
    assert report.invalid_rows == 2 and [e.row for e in report.errors] == [2, 3]
    assert report.summary() == f"{path}: 5 rows, 3 valid, 2 invalid, 0 label conflicts dropped"


def test_label_conflict_is_dropped_and_counted(tmp_path, caplog):
    conflict = good(2, safer_response_id=0, is_response_0_safe=False, is_response_1_safe=True)
    consistent = good(3, safer_response_id=1, is_response_0_safe=False, is_response_1_safe=True)
    path = write_jsonl(tmp_path / "conflict.jsonl", [good(1), conflict, consistent])
    with caplog.at_level(logging.WARNING):
        ds = load_pairs(path)  # not an error: no skip_invalid needed
    assert len(ds) == 2 and "(2)" not in "".join(ds["prompt"])
    assert "1 label-conflict rows" in caplog.text
    _, report = pairs_records(path)
    assert (report.conflicts_dropped, report.conflict_rows, report.invalid_rows) == (1, [2], 0)
    assert report.summary().endswith("3 rows, 2 valid, 0 invalid, 1 label conflicts dropped")


def test_column_mapping_and_error_names_file_column(tmp_path):
    mapping = {"prompt": "question", "response_0": "a", "response_1": "b"}
    rows = [
        {"question": "q1", "a": "x", "b": "y", "better_response_id": 1},
        {"question": " ", "a": "x", "b": "y", "better_response_id": 0},
    ]
    path = write_jsonl(tmp_path / "mapped.jsonl", rows)
    with pytest.raises(DataError, match=r"line 2, field 'question': is empty"):
        load_pairs(path, columns=mapping)
    ds = load_pairs(path, columns=mapping, skip_invalid=True)
    assert ds[0]["prompt"] == "q1" and ds[0]["response_1"] == "y"


def test_validate_records_in_memory_uses_row_numbers():
    rows, report = validate_records([good(1), good(2, response_0=None)], file="<mine>")
    assert len(rows) == 1 and report.unit == "row"
    assert (
        str(report.errors[0]) == "row 2, field 'response_0': is null; expected a non-empty string"
    )
