"""``constrained-align data check``: output and exit codes (0 valid, 1 invalid, 2 unreadable)."""

from __future__ import annotations

import gzip

from data_helpers import good, hh, write_jsonl

from constrained_align.cli import main
from constrained_align.data import check, check_file, format_report, loaders, readers


def test_valid_file_exits_0(tmp_path, capsys):
    path = write_jsonl(tmp_path / "ok.jsonl", [good(1), good(2)])
    assert main(["data", "check", str(path)]) == 0
    out = capsys.readouterr().out
    assert out == f"{path}: 2 rows, 2 valid, 0 invalid, 0 label conflicts dropped\n"


def test_invalid_rows_exit_1_and_are_listed(tmp_path, capsys):
    conflict = good(4, safer_response_id=0, is_response_0_safe=False, is_response_1_safe=True)
    rows = [good(1), good(2, prompt=""), good(3, better_response_id="1"), conflict]
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    assert main(["data", "check", str(path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{path}: 4 rows, 1 valid, 2 invalid, 1 label conflicts dropped"
    assert out[1] == "  line 2, field 'prompt': is empty or whitespace-only"
    assert out[2] == "  line 3, field 'better_response_id': expected 0, 1 or null, got a string '1'"
    assert out[3] == "  label conflicts (lines): 4"
    assert main(["data", "check", str(path), "--skip-invalid"]) == 0
    assert "would be dropped" in capsys.readouterr().out


def test_at_most_20_problems_are_listed(tmp_path):
    path = write_jsonl(tmp_path / "many.jsonl", [good(i, prompt="") for i in range(30)])
    lines = format_report(check_file(path)).splitlines()
    assert len(lines) == 1 + 20 + 1 and lines[-1] == "  ... and 10 more problems"


def test_unreadable_file_exits_2_with_one_line(tmp_path, capsys):
    assert main(["data", "check", str(tmp_path / "missing.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err == f"constrained-align: error: {tmp_path / 'missing.jsonl'}: no such file\n"
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"prompt": "p"}\n' * 500)[:30])
    assert main(["data", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "truncated gzip file" in err


def test_columns_and_formats(tmp_path, capsys):
    rows = [{"q": "p", "response_0": "a", "response_1": "b", "better_response_id": 1}]
    path = write_jsonl(tmp_path / "mapped.jsonl", rows)
    assert main(["data", "check", str(path)]) == 1
    assert "missing field 'prompt'" in capsys.readouterr().out
    assert main(["data", "check", str(path), "--columns", "prompt=q"]) == 0
    assert main(["data", "check", str(path), "--columns", "prompt"]) == 2
    capsys.readouterr()
    hh_path = write_jsonl(
        tmp_path / "hh.jsonl", [{"chosen": hh("Q", "A"), "rejected": hh("Q", "")}]
    )
    assert main(["data", "check", str(hh_path)]) == 1  # detected as hh-rlhf transcripts
    assert "line 1, field 'rejected': the final Assistant reply is empty" in capsys.readouterr().out
    cr = write_jsonl(tmp_path / "cr.jsonl", [{"prompt": "Q", "chosen": "A", "rejected": "B"}])
    assert main(["data", "check", str(cr)]) == 0
    assert main(["data", "check", str(cr), "--format", "pairs"]) == 1


def test_real_files(shared, capsys):
    assert main(["data", "check", str(shared / "pku-saferlhf/train.json"), "--format", "pku"]) == 0
    assert "32 rows, 32 valid, 0 invalid" in capsys.readouterr().out
    harmless = shared / "hh-rlhf/harmless-base/test.jsonl.gz"
    assert main(["data", "check", str(harmless)]) == 1
    out = capsys.readouterr().out
    assert "2312 rows, 2308 valid, 4 invalid" in out
    assert "line 87, field 'chosen': the final Assistant reply is empty" in out


def test_auto_format_reads_each_file_once(tmp_path, monkeypatch):
    reads = []

    def counting_read_table(path):
        reads.append(str(path))
        return readers.read_table(path)

    monkeypatch.setattr(check, "read_table", counting_read_table)
    monkeypatch.setattr(loaders, "read_table", counting_read_table)
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [good(1)])
    helpful = write_jsonl(
        tmp_path / "helpful.jsonl", [{"chosen": hh("Q", "A"), "rejected": hh("Q", "B")}]
    )
    cr = write_jsonl(tmp_path / "cr.jsonl", [{"prompt": "Q", "chosen": "A", "rejected": "B"}])
    got = [check.file_records(path)[1] for path in (pairs, helpful, cr)]
    assert reads == [str(pairs), str(helpful), str(cr)]
    assert [r.valid_rows for r in got] == [1, 1, 1]
    # Detected formats load as before: the axis still comes from the file name.
    assert check.load_file(helpful)["better_response_id"][0] in (0, 1)
    assert check.detect_format(cr) == "chosen-rejected"
