"""Bad score-model folders named as a run's reward or cost model: one line naming the folder
and what is wrong; exit 2; no code from the folder runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from constrained_align.scoring import ScoreModel
from tests.reliability.helpers import assert_one_line_error, run_cli


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("scorer") / "reward"
    ScoreModel.from_backbone("tiny-encoder", "reward", max_length=64, seed=1).save_pretrained(
        folder
    )
    return folder


def edit_json(folder: Path, **changes) -> None:
    file = folder / "score_model.json"
    data = json.loads(file.read_text())
    data.update(changes)
    file.write_text(json.dumps(data))


def remote_code(folder: Path) -> None:
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "planted"
    config["auto_map"] = {"AutoConfig": "configuration_planted.PlantedConfig"}
    (folder / "config.json").write_text(json.dumps(config))
    marker = folder.parent / "RAN"
    (folder / "configuration_planted.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")


CASES = [
    (
        "no score_model.json",
        lambda f: (f / "score_model.json").unlink(),
        ["not a saved score-model"],
    ),
    ("not JSON", lambda f: (f / "score_model.json").write_text("{oops"), ["not valid JSON"]),
    (
        "a JSON list",
        lambda f: (f / "score_model.json").write_text("[]"),
        ["expected a JSON object"],
    ),
    ("extended", lambda f: edit_json(f, temperature=2.0), ["unknown key 'temperature'"]),
    ("bad pooling", lambda f: edit_json(f, pooling="max"), ["'max' is not one of"]),
    ("other kind", lambda f: edit_json(f, kind="cost"), ["is a cost model, not a reward model"]),
    ("format 99", lambda f: edit_json(f, format_version=99), ["format_version 99"]),
    ("no weights", lambda f: (f / "model.safetensors").unlink(), ["model.safetensors"]),
    (
        "garbage weights",
        lambda f: (f / "model.safetensors").write_bytes(b"\x00" * 64),
        ["model.safetensors"],
    ),
    ("needs remote code", remote_code, ["needs its own Python code", "trust_remote_code"]),
]


@pytest.mark.parametrize(("name", "damage", "needles"), CASES, ids=[c[0] for c in CASES])
def test_bad_score_model_folder(name, damage, needles, saved_model, tmp_path, capsys):
    folder = tmp_path / "reward"
    shutil.copytree(saved_model, folder)
    damage(folder)
    out = tmp_path / "out"
    args = ["train", "dpo:tiny", "--set", f"reward={folder}", "--output-dir", str(out), "--quiet"]
    code, err = run_cli(args, capsys, tmp_path, own=out)
    assert code == 2
    assert_one_line_error(err, *needles)
    assert not (tmp_path / "RAN").exists()
    assert not (out / "config.yaml").exists()
