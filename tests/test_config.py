"""Strict config loading, overrides and presets."""

from dataclasses import dataclass
from pathlib import Path

import pytest

from constrained_align.algorithms import load_run_config
from constrained_align.config import ConfigError, apply_overrides, dump_yaml, param, preset_path


@dataclass
class Inner:
    x: int = param(0, "x")


@dataclass
class Outer:
    a: Inner = param(Inner(), "a")
    b: Inner = param(Inner(), "b")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def test_misspelled_key_names_key_file_and_closest(tmp_path):
    path = write(tmp_path, "algorithm: c_dpo\ntrain:\n  beta: 0.1\n  dual:\n    cost_limt: -0.2\n")
    with pytest.raises(ConfigError) as err:
        load_run_config(str(path))
    message = str(err.value)
    assert "'train.dual.cost_limt'" in message
    assert str(path) in message
    assert "did you mean 'cost_limit'" in message


def test_misspelled_top_level_key(tmp_path):
    path = write(tmp_path, "algorithm: dpo\nsed: 3\n")
    with pytest.raises(ConfigError, match=r"unknown key 'sed'.*did you mean 'seed'"):
        load_run_config(str(path))


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("algorithm: dpo\ntrain:\n  beta: fast\n", r"'train.beta'.*expected a number"),
        ("algorithm: dpo\ntrain:\n  epochs: 2.5\n", r"'train.epochs'.*expected an integer"),
        ("algorithm: dpo\ntrain:\n  preference: kind\n", r"'train.preference'.*not one of"),
        ("algorithm: c_dpo\ntrain:\n  dual:\n    multiplier: logsgd\n", r"did you mean 'log_sgd'"),
    ],
)
def test_wrong_types_are_rejected(tmp_path, text, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_run_config(str(write(tmp_path, text)))


def test_overrides_by_leaf_name_and_dotted_path():
    config = load_run_config(
        "c_dpo:testbed", ["beta=0.2", "cost_limit=-0.4", "train.dual.lambda_init=0.3"]
    )
    assert config.train.beta == 0.2
    assert config.train.dual.cost_limit == -0.4
    assert config.train.dual.lambda_init == 0.3
    assert config.testbed.mode == "population"


def test_override_errors():
    with pytest.raises(ConfigError, match=r"unknown override key 'bta'.*did you mean 'beta'"):
        load_run_config("dpo:testbed", ["bta=0.2"])
    config = load_run_config("ppo_lag:testbed")
    with pytest.raises(ConfigError, match=r"ambiguous; use one of: a\.x, b\.x"):
        apply_overrides(Outer(), ["x=1"])
    with pytest.raises(ConfigError, match="expected a number"):
        apply_overrides(config, ["beta=high"])
    with pytest.raises(ConfigError, match="key=value"):
        load_run_config("dpo:testbed", ["beta"])


def test_unknown_preset_lists_available():
    with pytest.raises(ConfigError, match=r"available: .*testbed"):
        preset_path("dpo:huge")
    with pytest.raises(ConfigError, match="no algorithm 'dpx'"):
        preset_path("dpx:tiny")


def test_tiny_is_a_language_model_run_and_dump_round_trips(tmp_path):
    base = load_run_config("c_dpo:testbed")
    tiny = load_run_config("c_dpo:tiny")
    assert tiny.algorithm == base.algorithm == "c_dpo"
    assert (base.backend, tiny.backend) == ("testbed", "causal_lm")
    assert tiny.model.policy == "tiny-decoder"
    text = dump_yaml(tiny, with_docs=True)
    assert "# KL weight β" in text
    path = tmp_path / "dumped.yaml"
    path.write_text(dump_yaml(tiny, with_docs=False))
    again = load_run_config(str(path))
    assert again == tiny


def test_partial_section_keeps_the_keys_own_defaults(tmp_path):
    path = write(tmp_path, "algorithm: ppo_lag\ntrain:\n  dual:\n    cost_limit: -1.0\n")
    config = load_run_config(str(path))
    assert config.train.dual.multiplier == "log_sgd"
    assert config.train.dual.lambda_max == 5.0
    assert config.train.dual.cost_limit == -1.0


def test_exponent_without_a_dot_is_a_number_on_the_command_line():
    """YAML 1.1 reads ``3e-4`` as a string; ``--set lr=3e-4`` must still mean 0.0003."""
    config = load_run_config("dpo:testbed", ["lr=3e-4", "beta=1E-1"])
    assert config.train.optim.lr == 3e-4 and config.train.beta == 0.1
    with pytest.raises(ConfigError, match="expected a number"):
        load_run_config("dpo:testbed", ["lr=3e-4x"])
