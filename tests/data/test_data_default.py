"""The default dataset shipped in the package: content, splits, licences, determinism, wheel."""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

import pytest

from constrained_align.data import (
    default_data_dir,
    load_default,
    load_default_prompts,
    load_pku_saferlhf,
    load_prompts,
    split_of,
)
from constrained_align.data.default import split_key

REPO = Path(__file__).resolve().parents[2]
FILES = [f"{kind}-{split}.jsonl.gz" for kind in ("pairs", "prompts") for split in ("train", "eval")]
LICENSES = {
    "HH-RLHF-MIT.txt": "MIT License",
    "AdvBench-MIT.txt": "Copyright (c) 2023 Andy Zou",
    "XSTest-CC-BY-4.0.txt": "Attribution 4.0 International",
    "safe-rlhf-Apache-2.0.txt": "Apache License",
}
HH = {"hh-rlhf/helpful-base", "hh-rlhf/harmless-base"}
PAIR_SOURCES = HH | {"xstest/mistralinstruct+mistralguard"}
EVAL_ONLY = {"safe-rlhf/problem.json", "xstest"}
PROMPT_SOURCES = HH | {"advbench"} | EVAL_ONLY
IDS = ("better_response_id", "safer_response_id")
LABELS = ("is_response_0_safe", "is_response_1_safe")


@pytest.fixture(scope="module")
def default():
    return {
        "pairs": {s: load_default(s) for s in ("train", "eval")},
        "prompts": {s: load_default_prompts(s) for s in ("train", "eval")},
    }


def _keys(ds):
    return {split_key(p, c) for p, c in zip(ds["prompt"], ds["context"])}


def test_files_sizes_and_licences():
    folder = Path(str(default_data_dir()))
    for name in FILES:
        assert (folder / name).is_file()
    total = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert total < 3_000_000
    for name, phrase in LICENSES.items():
        assert phrase in (folder / "LICENSES" / name).read_text(encoding="utf-8")
    provenance = (folder / "PROVENANCE.md").read_text(encoding="utf-8")
    for phrase in ("MIT", "CC-BY-4.0", "Apache-2.0", "3_partial_refusal", "% 5 == 0", "sha256"):
        assert phrase in provenance


def test_loads_with_expected_sources_and_splits(default):
    for split in ("train", "eval"):
        pairs, prompts = default["pairs"][split], default["prompts"][split]
        assert set(pairs["source"]) == PAIR_SOURCES
        assert set(prompts["source"]) == (
            PROMPT_SOURCES - (EVAL_ONLY if split == "train" else set())
        )
        for p, c in zip(pairs["prompt"], pairs["context"]):
            assert split_of(p, c) == split
        for p, c, s in zip(prompts["prompt"], prompts["context"], prompts["source"]):
            assert s in EVAL_ONLY or split_of(p, c) == split
    assert len(default["pairs"]["train"]) > 3000 and len(default["pairs"]["eval"]) > 700
    assert len(load_default("eval", sources=["hh-rlhf"])) == len(default["pairs"]["eval"]) - sum(
        s.startswith("xstest") for s in default["pairs"]["eval"]["source"]
    )
    assert len(load_default_prompts("eval", sources="xstest")) == len(
        load_default_prompts("eval", sources=["xstest"])
    )
    with pytest.raises(ValueError, match="unknown source"):
        load_default("train", sources=["pku-saferlhf"])
    with pytest.raises(ValueError, match="split must be one of"):
        load_default("test")


def test_splits_are_disjoint_by_conversation(default):
    train = _keys(default["pairs"]["train"]) | _keys(default["prompts"]["train"])
    evaluation = _keys(default["pairs"]["eval"]) | _keys(default["prompts"]["eval"])
    assert not train & evaluation
    # Every eval-only prompt is there unless its conversation is a training pair.
    eval_prompts = default["prompts"]["eval"]
    assert sum(s == "safe-rlhf/problem.json" for s in eval_prompts["source"]) == 83
    assert 60 < sum(s == "xstest" for s in eval_prompts["source"]) < 130


def test_labels_as_claimed(default):
    prompts = default["prompts"]["eval"]
    harmful = {}
    for s, h in zip(prompts["source"], prompts["harmful"]):
        harmful.setdefault(s, set()).add(h)
    assert harmful["advbench"] == harmful["safe-rlhf/problem.json"] == {True}
    assert harmful["xstest"] == {True, False} and harmful["hh-rlhf/harmless-base"] == {None}
    for split in ("train", "eval"):
        pairs = default["pairs"][split]
        columns = [pairs[name] for name in ("source", *IDS, *LABELS)]
        for source, better, safer, safe0, safe1 in zip(*columns):
            labels = (safe0, safe1)
            if source == "hh-rlhf/helpful-base":
                assert better in (0, 1) and safer is None and labels == (None, None)
            elif source == "hh-rlhf/harmless-base":
                assert better is None and safer in (0, 1) and labels == (None, None)
            else:
                assert source == "xstest/mistralinstruct+mistralguard" and better is None
                assert None not in labels
                # The safer id is set exactly when the labels differ, at the safe response.
                assert (safer is None) == (safe0 == safe1)
                assert safer is None or labels[safer] is True


def test_no_pku_or_beavertails_text(default, shared):
    pku = load_pku_saferlhf(shared / "pku-saferlhf/train.json")
    beaver = load_prompts(shared / "beavertails-evaluation/BeaverTails-Evaluation.json")
    pku_responses = set(pku["response_0"]) | set(pku["response_1"])
    nc_prompts = set(pku["prompt"]) | set(beaver["prompt"])
    assert len(nc_prompts) > 700  # one prompt is in both
    found: dict[str, set[str]] = {}  # text → sources of the default rows holding it
    blob = []
    for ds in [*default["pairs"].values(), *default["prompts"].values()]:
        for r in ds:
            texts = [r["prompt"], *(m["content"] for m in r["context"])]
            texts += [r.get("response_0") or "", r.get("response_1") or ""]
            blob += texts
            for text in texts:
                if text in nc_prompts or text in pku_responses:
                    found.setdefault(text, set()).add(r["source"])
    assert not pku_responses & set(found)
    blob_text = "\n".join(blob)
    assert not [t for t in pku_responses if t in blob_text]  # not even inside a longer text
    assert {t for t in nc_prompts if t in blob_text} == set(found)
    # PKU-SafeRLHF and BeaverTails took their prompts from HH-RLHF's red-team data, so a few
    # HH-RLHF harmless-base prompts (MIT, Anthropic's text) equal theirs: 5 of the 32 PKU
    # prompts and 1 of the 700 BeaverTails prompts. They may only come from HH-RLHF rows.
    hh_raw = ""
    for folder in ("helpful-base", "harmless-base"):
        with gzip.open(shared / f"hh-rlhf/{folder}/test.jsonl.gz", "rt", encoding="utf-8") as f:
            hh_raw += f.read()
    assert len(found) == 6 and len(set(found) & set(pku["prompt"])) == 5
    for text, sources in found.items():
        assert sources == {"hh-rlhf/harmless-base"} and json.dumps(text)[1:-1] in hh_raw


def _load_builder():
    spec = importlib.util.spec_from_file_location(
        "build_default", REPO / "tools/build_default_data.py"
    )
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    return builder


def _files(folder):
    return sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())


def _assert_deterministic_gzip(data: bytes, name: Path) -> None:
    assert data[:3] == b"\x1f\x8b\x08", name  # gzip magic, deflate
    assert data[3] == 0, name  # no flags: no file name, comment or extra field
    assert data[4:8] == b"\0\0\0\0", name  # mtime 0


def test_builder_is_atomic_and_deterministic(shared, tmp_path, monkeypatch):
    builder = _load_builder()
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("from an earlier build", encoding="utf-8")
    mode = out.stat().st_mode & 0o777
    with pytest.raises(SystemExit, match="missing from the input folder"):
        builder.build(tmp_path / "no-inputs", out)
    monkeypatch.setattr(builder, "MAX_BYTES", 1000)
    with pytest.raises(SystemExit, match=r"over 1000; .*out is unchanged"):
        builder.build(shared, out)
    # A failed build leaves the destination as it was and no temporary folder beside it.
    assert sorted(tmp_path.iterdir()) == [out] and _files(out) == [Path("old.txt")]
    monkeypatch.undo()
    builder.build(shared, out)
    assert sorted(tmp_path.iterdir()) == [out] and out.stat().st_mode & 0o777 == mode
    folder = Path(str(default_data_dir()))
    assert _files(out) == _files(folder)  # the old folder was replaced as a whole
    for rel in _files(out):
        built, shipped = (out / rel).read_bytes(), (folder / rel).read_bytes()
        if rel.suffix == ".gz":
            # Compressed bytes depend on the zlib build; the content and header must not.
            assert gzip.decompress(built) == gzip.decompress(shipped), rel
            _assert_deterministic_gzip(built, rel)
            _assert_deterministic_gzip(shipped, rel)
        else:
            assert built == shipped, rel
    with pytest.raises(SystemExit):
        builder.main([])  # the input folder is a required argument


def test_rows_are_canonical_json(default):
    with (Path(str(default_data_dir())) / "pairs-eval.jsonl.gz").open("rb") as raw:
        first = json.loads(gzip.GzipFile(fileobj=raw).readline())
    assert list(first) == list(default["pairs"]["eval"].features)
