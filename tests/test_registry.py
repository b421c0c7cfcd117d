"""The registry and the top-level algorithms/<key>/ folders are one to one."""

from pathlib import Path

import pytest

from constrained_align.algorithms import REGISTRY, load_run_config
from constrained_align.cli import main
from constrained_align.config import presets_root

ROOT = Path(__file__).resolve().parents[1] / "algorithms"
KEYS = {
    "online": {"ppo_lag", "ppo_shaping", "grpo_lag"},
    "offline": {"dpo", "c_dpo", "mocan", "pecan", "caid", "sacpo", "safe_dpo", "bfpo"},
}


def test_registry_has_the_eleven_keys_with_families():
    assert set(REGISTRY) == KEYS["online"] | KEYS["offline"]
    for family, keys in KEYS.items():
        assert {k for k in keys if REGISTRY[k].family == family} == keys


def test_folders_match_registry_one_to_one():
    folders = {p.name for p in ROOT.iterdir() if p.is_dir()}
    assert folders == set(REGISTRY)
    for key in REGISTRY:
        for name in ("README.md", "tiny.yaml", "paper.yaml", "testbed.yaml"):
            assert (ROOT / key / name).is_file(), f"algorithms/{key}/{name} is missing"
        assert not list((ROOT / key).glob("*.py")), f"algorithms/{key}/ must hold no Python"


def test_presets_root_is_the_folder():
    assert presets_root().resolve() in {
        ROOT.resolve(),
        (Path(__file__).parents[1] / "constrained_align" / "_presets").resolve(),
    }


@pytest.mark.parametrize("key", sorted(KEYS["online"] | KEYS["offline"]))
@pytest.mark.parametrize("preset", ["tiny", "paper", "testbed"])
def test_every_yaml_loads_into_the_key_config(key, preset):
    config = load_run_config(f"{key}:{preset}")
    assert config.algorithm == key
    assert isinstance(config.train, REGISTRY[key].config_class)


def test_every_preset_file_loads():
    """Every YAML under algorithms/ (tiny, paper, testbed, smollm2, ...) is a valid config."""
    files = sorted(ROOT.glob("*/*.yaml"))
    assert len(files) >= 3 * len(REGISTRY)
    for path in files:
        config = load_run_config(str(path))
        assert config.algorithm == path.parent.name, path


def test_card_documents_metrics_and_update_order():
    for key in REGISTRY:
        text = (ROOT / key / "README.md").read_text()
        for heading in ("Objective", "Update order", "Metrics", "Deviations"):
            assert heading in text, f"{key} card lacks a '{heading}' section"
        if REGISTRY[key].has_multiplier:
            assert "dual/lambda" in text


def test_cli_list_prints_every_key(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for key in REGISTRY:
        assert f"\n{key} " in out


def test_cli_show_config_and_misspelled_yaml(tmp_path, capsys):
    assert main(["show-config", "mocan:tiny", "--set", "beta=0.3"]) == 0
    assert "beta: 0.3" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("algorithm: mocan\ntrain:\n  epoch: 3\n")
    assert main(["show-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "'train.epoch'" in err and str(bad) in err and "did you mean 'epochs'" in err
