"""``constrained-align train KEY:PRESET --dry-run``: every shipped preset resolves and validates
(config, data sources, model names) without loading weights; a bad one is one clear line."""

from __future__ import annotations

import pytest

from constrained_align.algorithms import REGISTRY
from constrained_align.cli import main

PRESETS = [(key, name) for key in sorted(REGISTRY) for name in ("paper", "tiny", "testbed")]


@pytest.mark.parametrize(("key", "preset"), PRESETS)
def test_every_shipped_preset_passes_a_dry_run(key, preset, capsys):
    assert main(["train", f"{key}:{preset}", "--dry-run"]) == 0
    out = capsys.readouterr().out
    backend = "testbed" if preset == "testbed" else "causal_lm"
    assert f"a valid {backend} run of {key}" in out
    if backend == "causal_lm":
        for line in ("pairs:", "prompts:", "policy:", "reward:", "cost:"):
            assert line in out


def test_paper_presets_are_language_model_runs(capsys):
    for key in sorted(REGISTRY):
        assert main(["train", f"{key}:paper", "--dry-run"]) == 0
        assert "hub id" in capsys.readouterr().out  # the paper's model, not a tiny stand-in


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("pairs=/no/such/file.jsonl", "data.pairs: /no/such/file.jsonl is not 'default'"),
        ("policy=/no/such/model", "'/no/such/model' is neither a known name"),
        ("reward=not a model", "scorers.reward"),
        ("max_new_tokens=0", "generation.max_new_tokens must be at least 1"),
        ("betta=0.1", "unknown override key 'betta'"),
    ],
)
def test_a_bad_preset_fails_the_dry_run_in_one_line(setting, message, tmp_path, capsys):
    assert main(["train", "c_dpo:tiny", "--set", setting, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) <= 2
    assert not list(tmp_path.iterdir())  # nothing written
