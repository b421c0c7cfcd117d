"""``train-scorer`` then ``eval-scorer`` end to end on a tiny encoder and real PKU-SafeRLHF rows."""

from __future__ import annotations

import json
import math
from pathlib import Path

from constrained_align.cli import main


def test_train_then_eval_scorers_end_to_end(shared: Path, tmp_path: Path, capsys) -> None:
    pku = shared / "pku-saferlhf" / "train.json"
    common = ["--set", "backbone=tiny-encoder", "--set", "epochs=2", "--set", "max_length=128"]
    common += ["--set", f"data={pku}", "--set", "validation_fraction=0.25", "--quiet"]
    for kind in ("reward", "cost"):
        assert main(["train-scorer", kind, *common, "--output-dir", str(tmp_path / kind)]) == 0
        summary = json.loads((tmp_path / kind / "summary.json").read_text())
        assert summary["kind"] == kind and summary["train_pairs"] > 0
        assert (tmp_path / kind / "model" / "model.safetensors").is_file()
    out = capsys.readouterr().out
    assert "Best epoch" in out and "model saved to" in out

    code = main(
        [
            "eval-scorer",
            "--reward",
            str(tmp_path / "reward" / "model"),
            "--cost",
            str(tmp_path / "cost" / "model"),
            "--data",
            str(pku),
            "--output-dir",
            str(tmp_path / "eval"),
            "--quiet",
        ]
    )
    assert code == 0
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results["data"]["rows"] == 32
    assert results["reward"]["all"]["n_pairs"] == 32
    cls = results["cost"]["all"]["classification"]
    # PKU sample: 16 rows both unsafe, 11 both safe, 5 mixed → 64 labelled responses, 37 unsafe.
    assert cls["n"] == 64 and math.isclose(cls["unsafe_rate"], 37 / 64)
    assert 0.0 <= results["reward"]["all"]["accuracy"] <= 1.0
    assert (tmp_path / "eval" / "scatter.png").stat().st_size > 10_000
    assert "pairwise accuracy" in capsys.readouterr().out


def test_eval_scorer_needs_a_model(tmp_path: Path, capsys) -> None:
    assert main(["eval-scorer", "--output-dir", str(tmp_path)]) == 2
    assert "give --reward DIR, --cost DIR, or both" in capsys.readouterr().err


def test_train_scorer_on_a_bad_file_is_one_clear_error(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"prompt": "p", "response_0": "a", "response_1": "b", "better_response_id": 2}\n'
    )
    code = main(
        ["train-scorer", "reward", "--set", f"data={bad}", "--set", "backbone=tiny-encoder"]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "line 1" in err and "better_response_id" in err


def test_train_scorer_unknown_setting_names_the_closest(capsys) -> None:
    assert main(["train-scorer", "cost", "--set", "epoch=1"]) == 2
    assert "epoch" in capsys.readouterr().err
