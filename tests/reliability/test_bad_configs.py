"""Bad configs, presets and overrides: one line naming the field, the value or the file; exit 2;
nothing written (the run folder is not even created)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability.helpers import assert_one_line_error, run_cli

# (name, YAML text or None for the preset, --set items, needles of the one error line)
CASES = [
    ("empty file", "", [], ["'algorithm' is missing"]),
    ("no algorithm", "seed: 1\n", [], ["'algorithm' is missing"]),
    ("algorithm not a string", "algorithm: 5\n", [], ["'algorithm' is 5"]),
    ("top level a list", "- algorithm: dpo\n", [], ["top level must be a mapping"]),
    ("not YAML", "algorithm: [dpo\n", [], ["not valid YAML", "line 2"]),
    ("key twice", "algorithm: dpo\nseed: 1\nseed: 2\n", [], ["'seed' appears twice"]),
    ("train key twice", "algorithm: dpo\ntrain:\n  beta: 1\n  beta: 2\n", [], ["'beta' appears"]),
    ("unknown algorithm", "algorithm: ppo\n", [], ["unknown algorithm 'ppo'", "ppo_lag"]),
    ("unknown backend", "algorithm: dpo\nbackend: gpu\n", [], ["unknown backend 'gpu'"]),
    ("misspelt key", "algorithm: dpo\nsed: 1\n", [], ["unknown key 'sed'", "did you mean 'seed'"]),
    ("misspelt train key", "algorithm: dpo\ntrain: {betta: 1}\n", [], ["'train.betta'", "beta"]),
    ("wrong type", "algorithm: dpo\ntrain: {epochs: two}\n", [], ["train.epochs", "integer"]),
    ("LM section on testbed", "algorithm: dpo\nmodel: {lora: true}\n", [], ["unknown key 'model'"]),
    ("beta 0", None, ["beta=0"], ["train.beta must be > 0, got 0.0"]),
    ("beta NaN", None, ["beta=.nan"], ["train.beta must be a finite number, got nan"]),
    ("beta -inf", None, ["beta=-.inf"], ["train.beta must be a finite number"]),
    ("lr negative", None, ["lr=-1"], ["train.optim.lr must be in (0, 10], got -1.0"]),
    ("lr 1e30", None, ["lr=1e30"], ["train.optim.lr must be in (0, 10], got 1e+30"]),
    ("epochs 0", None, ["epochs=0"], ["train.epochs must be at least 1, got 0"]),
    ("epochs -1", None, ["epochs=-1"], ["train.epochs must be at least 1, got -1"]),
    ("temperature -1", None, ["sampling_temperature=-1"], ["sampling_temperature must be at"]),
    ("top_p 0", None, ["top_p=0"], ["generation.top_p must be in (0, 1], got 0.0"]),
    ("top_p 2", None, ["top_p=2"], ["generation.top_p must be in (0, 1]"]),
    ("weight decay -1", None, ["weight_decay=-1"], ["weight_decay must be at least 0"]),
    ("max_new_tokens text", None, ["max_new_tokens=abc"], ["max_new_tokens", "integer"]),
    ("label temperature 0", None, ["temperature=0"], ["train.temperature must be > 0"]),
    ("pair batch 0", None, ["pair_batch_size=0"], ["data.pair_batch_size must be at least 1"]),
    ("eval prompts -1", None, ["eval_prompts=-1"], ["data.eval_prompts must be at least 0"]),
    ("no '='", None, ["beta"], ["must look like key=value"]),
    ("unknown override", None, ["betta=0.2"], ["unknown override key 'betta'"]),
    ("null reward model", None, ["reward=null"], ["scorers.reward is null"]),
    ("algorithm to ppo_lag", None, ["algorithm=ppo_lag"], ["unknown key 'train.epochs'"]),
]

C_DPO_CASES = [
    ("cost limit inf", ["cost_limit=.inf"], ["train.dual.cost_limit must be a finite number"]),
    ("lambda_lr 0", ["lambda_lr=0"], ["train.dual.lambda_lr must be > 0"]),
    ("window -1", ["cost_window=-1"], ["train.dual.cost_window must be at least 0"]),
    ("rounds 0", ["rounds=0"], ["train.rounds must be at least 1"]),
    ("init above max", ["lambda_init=5", "lambda_max=1"], ["lambda_init 5.0 is above lambda_max"]),
]


@pytest.mark.parametrize(("name", "text", "sets", "needles"), CASES, ids=[c[0] for c in CASES])
def test_bad_config_is_one_line_and_writes_nothing(name, text, sets, needles, tmp_path, capsys):
    spec = "dpo:tiny"
    if text is not None:
        spec = str(tmp_path / "run.yaml")
        Path(spec).write_text(text)
    out = tmp_path / "out"
    args = ["train", spec, "--output-dir", str(out), *[x for s in sets for x in ("--set", s)]]
    code, err = run_cli(args, capsys, tmp_path)
    assert code == 2
    assert_one_line_error(err, *needles)
    assert not out.exists()


@pytest.mark.parametrize(("name", "sets", "needles"), C_DPO_CASES, ids=[c[0] for c in C_DPO_CASES])
def test_bad_dual_setting_is_one_line(name, sets, needles, tmp_path, capsys):
    args = ["train", "c_dpo:tiny", "--output-dir", str(tmp_path / "out")]
    code, err = run_cli([*args, *[x for s in sets for x in ("--set", s)]], capsys, tmp_path)
    assert code == 2
    assert_one_line_error(err, *needles)


def test_log_sgd_needs_a_positive_initial_lambda(tmp_path, capsys):
    args = ["train", "ppo_lag:tiny", "--set", "lambda_init=0", "--output-dir", str(tmp_path / "o")]
    code, err = run_cli(args, capsys, tmp_path)
    assert code == 2
    assert_one_line_error(err, "train.dual is inconsistent", "lambda_init must be > 0")


def test_algorithm_override_re_resolves_the_config(capsys):
    """``--set algorithm=c_dpo`` on a dpo preset reads the file again as a c_dpo run."""
    from constrained_align.cli import main

    assert main(["show-config", "dpo:tiny", "--set", "algorithm=c_dpo", "--no-docs"]) == 0
    out = capsys.readouterr().out
    assert "algorithm: c_dpo" in out and "rounds:" in out and "# train: CDPOConfig" in out


@pytest.mark.parametrize(
    ("spec", "needles"),
    [
        ("c_dpo:nope", ["no preset 'nope' for 'c_dpo'", "tiny"]),
        ("nokey:tiny", ["no algorithm 'nokey' with presets"]),
        ("missing.yaml", ["config file not found: missing.yaml"]),
        ("not-a-preset", ["neither a YAML file nor a preset"]),
    ],
)
def test_unknown_presets_and_files(spec, needles, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, err = run_cli(["train", spec], capsys, tmp_path)
    assert code == 2
    assert_one_line_error(err, *needles)


def test_a_folder_given_as_config(tmp_path, capsys):
    (tmp_path / "folder.yaml").mkdir()
    code, err = run_cli(["train", str(tmp_path / "folder.yaml")], capsys, tmp_path)
    assert code == 2
    assert_one_line_error(err, "folder.yaml")


def test_resume_and_overwrite_together(tmp_path, capsys):
    args = ["train", "dpo:tiny", "--resume", "--overwrite", "--output-dir", str(tmp_path / "o")]
    code, err = run_cli(args, capsys, tmp_path)
    assert code == 2
    assert_one_line_error(err, "--resume continues the run", "--overwrite discards it")
