"""PKU-SafeRLHF, HH-RLHF and chosen/rejected loaders, on hand-written rows and the real files."""

from __future__ import annotations

import gzip
import json
from collections import Counter

import pytest
from data_helpers import hh, write_jsonl

from constrained_align.data import (
    DataError,
    harmlessness_pairs,
    helpfulness_pairs,
    hh_rlhf_records,
    labelled_responses,
    load_chosen_rejected,
    load_hh_rlhf,
    load_pku_saferlhf,
    unique_prompts,
)
from constrained_align.data.hh import parse_transcript, split_transcript

# --- PKU-SafeRLHF ------------------------------------------------------------------------


def test_pku_sample_loads_with_label_mix_of_its_notice(shared):
    ds = load_pku_saferlhf(shared / "pku-saferlhf/train.json")
    assert len(ds) == 32
    assert set(ds["source"]) == {"pku-saferlhf"} and all(c == [] for c in ds["context"])
    mix = Counter(zip(ds["is_response_0_safe"], ds["is_response_1_safe"]))
    assert mix[(False, False)] == 16 and mix[(True, True)] == 11
    assert mix[(True, False)] + mix[(False, True)] == 5
    assert sum(b != s for b, s in zip(ds["better_response_id"], ds["safer_response_id"])) == 19


def test_pku_views(shared):
    ds = load_pku_saferlhf(shared / "pku-saferlhf")  # a folder: finds train.json
    assert len(helpfulness_pairs(ds)) == 32
    harm = harmlessness_pairs(ds)
    assert len(harm) == 32 and all(harm["ranked"])
    signs = Counter(zip(harm["unsafer_sign"], harm["safer_sign"]))
    assert signs == {(1, 1): 16, (-1, -1): 11, (1, -1): 5}  # mixed rows: safer is the safe one
    assert len(unique_prompts(ds)) == len(set(ds["prompt"]))


def test_pku_labelled_responses_match_an_independent_count(shared):
    path = shared / "pku-saferlhf/train.json"
    # The expectation is computed from the raw JSON with plain Python, not through the library:
    # every (prompt, response) with one label throughout, the sample having no context.
    raw = json.loads(path.read_text(encoding="utf-8"))
    labels: dict[tuple[str, str], set[bool]] = {}
    for r in raw:
        for k in (0, 1):
            key = (r["prompt"], r[f"response_{k}"])
            labels.setdefault(key, set()).add(r[f"is_response_{k}_safe"])
    expected = {key: found.pop() for key, found in labels.items() if len(found) == 1}
    labelled = labelled_responses(load_pku_saferlhf(path))
    got = {
        (p, r): s for p, r, s in zip(labelled["prompt"], labelled["response"], labelled["is_safe"])
    }
    assert len(raw) == 32 and all(c == [] for c in labelled["context"])
    assert len(labelled) == len(got) == len(expected)
    assert Counter(labelled["is_safe"]) == Counter(expected.values())
    assert got == expected


def test_pku_drops_extra_columns_and_local_paths_never_reach_the_hub(tmp_path):
    row = {
        "prompt": "p",
        "response_0": "a",
        "response_1": "b",
        "better_response_id": 0,
        "safer_response_id": 1,
        "is_response_0_safe": True,
        "is_response_1_safe": True,
        "response_0_severity_level": 0,
        "prompt_source": "Alpaca",
    }
    ds = load_pku_saferlhf(write_jsonl(tmp_path / "train.jsonl", [row]))
    assert ds.column_names[-2:] == ["context", "source"] and "prompt_source" not in ds.column_names
    with pytest.raises(DataError, match="no such file or folder"):
        load_pku_saferlhf(tmp_path / "missing" / "train.json")
    with pytest.raises(DataError, match="no such file or folder"):
        load_pku_saferlhf("./not-here.jsonl")


# --- HH-RLHF -----------------------------------------------------------------------------


def test_split_hand_written_transcript():
    text = hh("Hi", "Hello! How can I help?", "How do I boil an egg?", "Boil it for 8 minutes.")
    context, prompt, reply = split_transcript(text)
    assert context == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
    ]
    assert (prompt, reply) == ("How do I boil an egg?", "Boil it for 8 minutes.")
    # Upstream quirks: same-speaker runs merge, "Humans:" or an inline "Human:" is plain text.
    quirky = "Human: Q\n\nAssistant: Umm.\n\nAssistant: A.\n\nHumans: ok Human: x"
    assert parse_transcript(quirky) == [
        {"role": "user", "content": "Q"},
        {"role": "assistant", "content": "Umm.\n\nA.\n\nHumans: ok Human: x"},
    ]
    with pytest.raises(ValueError, match="does not end with an Assistant turn"):
        split_transcript(hh("Hi", "Hello", "Bye"))
    with pytest.raises(ValueError, match="text before the first"):
        split_transcript("Preamble" + hh("Hi", "Hello"))


def _hh_file(tmp_path, rows, folder="helpful-base"):
    (tmp_path / folder).mkdir(exist_ok=True)
    path = tmp_path / folder / "test.jsonl.gz"
    path.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode()))
    return path


def test_hh_rows_and_axis_from_path(tmp_path):
    rows = [
        {
            "chosen": hh("Hi", "Hello", f"Q{i}", "Good answer"),
            "rejected": hh("Hi", "Hello", f"Q{i}", "Bad"),
        }
        for i in range(40)
    ]
    helpful = load_hh_rlhf(_hh_file(tmp_path, rows, "helpful-base"))
    assert len(helpful) == 40 and set(helpful["source"]) == {"hh-rlhf/helpful-base"}
    assert helpful[0]["context"] == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
    ]
    assert set(helpful["safer_response_id"]) == {None}
    ids = helpful["better_response_id"]
    assert set(ids) == {0, 1}  # the hash order puts the chosen reply first or second
    assert all(r[f"response_{b}"] == "Good answer" for r, b in zip(helpful, ids))
    harmless = load_hh_rlhf(_hh_file(tmp_path, rows, "harmless-base"))
    assert set(harmless["better_response_id"]) == {None}
    assert harmless["safer_response_id"] == ids  # same rows, same deterministic order
    assert load_hh_rlhf(_hh_file(tmp_path, rows, "x"), axis="harmless")["source"][0] == "hh-rlhf"
    with pytest.raises(DataError, match="pass axis='helpful' or axis='harmless'"):
        load_hh_rlhf(_hh_file(tmp_path, rows, "x"))


def test_hh_invalid_rows(tmp_path):
    ok = {"chosen": hh("Q", "Yes"), "rejected": hh("Q", "No")}
    bad = [
        ({"chosen": hh("Q", "Yes"), "rejected": hh("Other", "No")}, "rejected", "differs from"),
        ({"chosen": hh("Q", "Yes"), "rejected": hh("Q", " ")}, "rejected", "reply is empty"),
        ({"chosen": hh("Q", "Same"), "rejected": hh("Q", "Same")}, "rejected", "identical"),
        ({"chosen": hh("Q", "Yes", "More?"), "rejected": hh("Q", "No")}, "chosen", "does not end"),
        ({"chosen": hh("Q", "Yes")}, "rejected", "missing field 'rejected'"),
    ]
    path = _hh_file(tmp_path, [ok] + [b[0] for b in bad])
    with pytest.raises(DataError) as info:
        load_hh_rlhf(path)
    message = str(info.value)
    assert "5 of 6 rows are invalid" in message
    for line, (_, field, phrase) in enumerate(bad, start=2):
        assert f"line {line}, field '{field}': " in message and phrase in message
    assert len(load_hh_rlhf(path, skip_invalid=True)) == 1


@pytest.mark.parametrize(
    ("folder", "rows", "invalid", "reasons"),
    [
        ("helpful-base", 2354, 6, {"the final Assistant reply is empty": 4, "identical": 2}),
        ("harmless-base", 2312, 4, {"the final Assistant reply is empty": 4}),
    ],
)
def test_hh_real_test_splits(shared, folder, rows, invalid, reasons):
    path = shared / "hh-rlhf" / folder / "test.jsonl.gz"
    kept, report = hh_rlhf_records(path)
    assert (report.total_rows, report.invalid_rows, len(kept)) == (rows, invalid, rows - invalid)
    for phrase, n in reasons.items():
        assert sum(phrase in e.message for e in report.errors) == n
    with pytest.raises(DataError, match=f"{invalid} of {rows} rows are invalid"):
        load_hh_rlhf(path)
    ds = load_hh_rlhf(path, skip_invalid=True)
    axis = "better_response_id" if folder == "helpful-base" else "safer_response_id"
    assert len(ds) == rows - invalid and None not in ds[axis]
    assert 0.4 < sum(ds[axis]) / len(ds) < 0.6  # hash order: about half the ids are 1
    assert sum(bool(c) for c in ds["context"]) > len(ds) // 3  # many multi-turn dialogues
    for r in ds.select(range(50)):
        assert not r["prompt"].startswith(("Human:", " ")) and r["response_0"] != r["response_1"]


# --- chosen/rejected files ---------------------------------------------------------------


def test_chosen_rejected_with_mapping_and_errors(tmp_path):
    context = [{"role": "user", "content": "x"}]
    rows = [
        {"question": "Q1", "good": "Yes", "bad": "No", "context": context},
        {"question": "Q2", "good": "Same", "bad": "Same"},
        {"question": "", "good": "A", "bad": "B"},
    ]
    path = write_jsonl(tmp_path / "cr.jsonl", rows)
    mapping = {"prompt": "question", "chosen": "good", "rejected": "bad"}
    with pytest.raises(DataError) as info:
        load_chosen_rejected(path, columns=mapping)
    assert "line 2, field 'bad': identical to 'good'" in str(info.value)
    assert "line 3, field 'question': is empty" in str(info.value)
    ds = load_chosen_rejected(path, axis="harmless", columns=mapping, skip_invalid=True)
    assert len(ds) == 1 and ds[0]["better_response_id"] is None
    safer = ds[0]["safer_response_id"]
    assert ds[0][f"response_{safer}"] == "Yes" and ds[0]["context"][0]["content"] == "x"
    assert ds[0]["source"] == "cr.jsonl"
    with pytest.raises(DataError, match=r"line 1, field 'chosen': missing field 'chosen'"):
        load_chosen_rejected(write_jsonl(tmp_path / "no.jsonl", [{"prompt": "p", "rejected": "r"}]))
