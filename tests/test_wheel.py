"""The built wheel carries the presets and the embedded default dataset, and no PKU/BeaverTails.

Builds the wheel for real (hatchling, no build isolation, so no network) and reads it back.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEFAULT = "constrained_align/data/default/"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    cmd = [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation"]
    subprocess.run([*cmd, "-q", "-w", str(out)], check=True, capture_output=True)
    (path,) = out.glob("constrained_align-*.whl")
    return zipfile.ZipFile(path)


def test_wheel_ships_default_dataset_licences_and_presets(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    for split in ("train", "eval"):
        assert f"{DEFAULT}pairs-{split}.jsonl.gz" in names
        assert f"{DEFAULT}prompts-{split}.jsonl.gz" in names
    assert f"{DEFAULT}PROVENANCE.md" in names
    assert len([n for n in names if n.startswith(f"{DEFAULT}LICENSES/")]) == 4
    assert "constrained_align/_presets/c_dpo/tiny.yaml" in names
    size = sum(i.file_size for i in wheel.infolist() if i.filename.startswith(DEFAULT))
    assert size < 4_000_000


def test_wheel_ships_the_score_models(wheel: zipfile.ZipFile) -> None:
    """The four shipped score models (score config + head each) and their provenance, ≤ 5 MB."""
    names = set(wheel.namelist())
    root = "constrained_align/scoring/defaults/"
    for model in ("default-reward", "default-cost", "judge-reward", "judge-cost"):
        assert {f"{root}{model}/score_model.json", f"{root}{model}/head.safetensors"} <= names
    assert f"{root}PROVENANCE.md" in names
    assert sum(i.file_size for i in wheel.infolist() if i.filename.startswith(root)) < 5_000_000


def test_wheel_has_no_non_commercial_data(wheel: zipfile.ZipFile, shared: Path) -> None:
    """No PKU-SafeRLHF response, and no file named after PKU-SafeRLHF or BeaverTails."""
    names = wheel.namelist()
    assert not [n for n in names if "pku" in n.lower() or "beaver" in n.lower()]
    pku = json.loads((shared / "pku-saferlhf" / "train.json").read_text(encoding="utf-8"))
    responses = {r[f"response_{i}"].strip() for r in pku for i in (0, 1)}
    text = []
    for name in names:
        data = wheel.read(name)
        text.append(
            (gzip.decompress(data) if name.endswith(".gz") else data).decode("utf-8", "ignore")
        )
    blob = "\n".join(text)
    found = [r[:60] for r in responses if len(r) > 40 and r in blob]
    assert found == []
