"""Bad data files: ``data check`` and ``train`` decide with the same code. Each bad row is named
by file, line and field; ``data check`` exits 1 and ``train`` exits 2 with one line, before any
model loads, and writes nothing but its own folder's claim."""

from __future__ import annotations

import bz2
import gzip
import json

import pytest

from tests.reliability.helpers import GOOD_PAIR, assert_one_line_error, run_cli, write_jsonl

GOOD = json.dumps(GOOD_PAIR)
OTHER = json.dumps({**GOOD_PAIR, "prompt": "How do I plant tomatoes?"})


UNLABELLED = {
    "better_response_id": None,
    "safer_response_id": None,
    "is_response_0_safe": None,
    "is_response_1_safe": None,
}


def row(**changes) -> str:
    return json.dumps({**GOOD_PAIR, "prompt": "Third question?", **changes})


# (name, text of line 3, field named in the error or None, phrase)
ROWS = [
    (
        "NaN id",
        row(better_response_id=0).replace('"better_response_id": 0', '"better_response_id": NaN'),
        None,
        "NaN is not valid JSON",
    ),
    (
        "Infinity",
        row().replace('"safer_response_id": 0', '"safer_response_id": Infinity'),
        None,
        "Infinity is not valid JSON",
    ),
    ("key twice", row()[:-1] + ', "prompt": "again"}', None, "key 'prompt' appears twice"),
    ("lone surrogate", row(prompt="caf\ud800"), "prompt", "lone surrogate"),
    ("NUL", row(response_1="no\u0000pe"), "response_1", "NUL character"),
    ("zero-width only", row(prompt="\u200b\u2060\u200b"), "prompt", "only invisible characters"),
    ("whitespace only", row(response_0="   \n "), "response_0", "empty or whitespace-only"),
    ("id as text", row(better_response_id="yes"), "better_response_id", "expected 0, 1 or null"),
    ("id 0.5", row(safer_response_id=0.5), "safer_response_id", "expected 0, 1 or null"),
    ("label as 1", row(is_response_0_safe=1), "is_response_0_safe", "expected true, false"),
    ("same responses", row(response_1=GOOD_PAIR["response_0"]), "response_1", "identical to"),
    (
        "no preference",
        row(
            better_response_id=None,
            safer_response_id=None,
            is_response_0_safe=None,
            is_response_1_safe=None,
        ),
        "better_response_id",
        "carries no preference",
    ),
    ("context text", row(context="earlier"), "context", "expected a list"),
    ("context role", row(context=[{"role": "bot", "content": "hi"}]), "context", "role 'bot'"),
    ("context NUL", row(context=[{"role": "user", "content": "a\u0000"}]), "context", "NUL"),
    ("not JSON", '{"prompt": "x", oops}', None, "invalid JSON"),
    ("not an object", '["a", "b"]', None, "expected a JSON object"),
]


@pytest.mark.parametrize(("name", "line", "field", "phrase"), ROWS, ids=[r[0] for r in ROWS])
def test_bad_row_is_named_by_check_and_train(name, line, field, phrase, tmp_path, capsys):
    path = write_jsonl(tmp_path / "pairs.jsonl", raw=f"{GOOD}\n{OTHER}\n{line}\n")
    where = "line 3" + (f", field '{field}'" if field else "")
    code, _ = run_cli(["data", "check", str(path)], capsys, tmp_path)
    assert code == 1
    out = tmp_path / "out"
    code, err = run_cli(
        ["train", "dpo:tiny", "--set", f"pairs={path}", "--output-dir", str(out)],
        capsys,
        tmp_path,
        own=out,
    )
    assert code == 2
    assert_one_line_error(err, str(path), "1 of 3 rows are invalid", where, phrase)
    assert not (out / "config.yaml").exists()  # refused before anything was built


def test_data_check_lists_the_same_row(tmp_path, capsys):
    from constrained_align.cli import main

    path = write_jsonl(tmp_path / "p.jsonl", raw=f"{GOOD}\n{row(prompt=chr(0x200B))}\n")
    assert main(["data", "check", str(path)]) == 1
    out = capsys.readouterr().out
    assert "line 2, field 'prompt': holds only invisible characters" in out


def _bytes(name: str) -> bytes:
    text = f"{GOOD}\n{OTHER}\n".encode()
    return {"gzip": gzip.compress(text), "bzip2": bz2.compress(text)}[name]


@pytest.mark.parametrize(
    ("name", "make", "check_code", "needles"),
    [
        ("empty file", lambda p: p.write_text(""), 1, ["no usable row among its 0 rows"]),
        (
            "only label conflicts",
            lambda p: p.write_text(json.dumps({**GOOD_PAIR, "is_response_0_safe": False}) + "\n"),
            1,
            ["no usable row", "1 label conflicts"],
        ),
        ("bzip2 named .jsonl", lambda p: p.write_bytes(_bytes("bzip2")), 2, ["bzip2-compressed"]),
        ("a folder", lambda p: p.mkdir(), 2, ["is a directory"]),
        ("missing", lambda p: None, 2, ["no such file"]),
        ("cut last line", lambda p: p.write_text(f"{GOOD}\n{GOOD[:30]}"), 1, ["cut off"]),
    ],
)
def test_bad_file_is_one_line(name, make, check_code, needles, tmp_path, capsys):
    path = tmp_path / "pairs.jsonl"
    make(path)
    code, err = run_cli(["data", "check", str(path)], capsys, tmp_path)
    assert code == check_code
    capsys.readouterr()
    out = tmp_path / "out"
    code, err = run_cli(
        ["train", "dpo:tiny", "--set", f"pairs={path}", "--output-dir", str(out)],
        capsys,
        tmp_path,
        own=out,
    )
    assert code == 2
    assert_one_line_error(err, str(path), *needles)


@pytest.mark.parametrize(
    ("name", "file", "content", "needles"),
    [
        (
            "csv header twice",
            "p.csv",
            "prompt,prompt,response_0\na,b,c\n",
            ["names ['prompt'] twice"],
        ),
        ("unsupported type", "p.txt", "hello\n", ["unsupported file type"]),
        ("latin-1 json", "p.json", '[{"prompt": "caf\xe9"}]', ["not UTF-8"]),
        ("json scalar", "p.json", "42", ["expected an array of row objects"]),
    ],
)
def test_bad_file_formats(name, file, content, needles, tmp_path, capsys):
    path = tmp_path / file
    path.write_bytes(content.encode("latin-1"))
    code, err = run_cli(["data", "check", str(path)], capsys, tmp_path)
    assert code == 2
    assert_one_line_error(err, *needles)


def test_gzip_content_reads_whatever_its_name(tmp_path, capsys):
    from constrained_align.data import load_pairs

    path = tmp_path / "pairs.jsonl"
    path.write_bytes(_bytes("gzip"))
    assert len(load_pairs(path)) == 2
    code, _ = run_cli(["data", "check", str(path)], capsys, tmp_path)
    assert code == 0


def test_data_without_the_stage_axis_is_one_line(tmp_path, capsys):
    """sacpo trains on helpfulness then safety: helpfulness-only pairs cannot serve stage 2."""
    helpful_only = [
        {
            **GOOD_PAIR,
            "prompt": f"Q{i}?",
            "safer_response_id": None,
            "is_response_0_safe": None,
            "is_response_1_safe": None,
        }
        for i in range(4)
    ]
    path = write_jsonl(tmp_path / "h.jsonl", helpful_only)
    out = tmp_path / "out"
    args = ["train", "sacpo:tiny", "--set", f"pairs={path}", "--output-dir", str(out), "--quiet"]
    code, err = run_cli(args, capsys, tmp_path, own=out)
    assert code == 2
    assert_one_line_error(err, "sacpo needs pairs with a safety order")
