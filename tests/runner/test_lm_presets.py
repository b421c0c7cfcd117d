"""End-to-end runs of ``constrained-align train`` on the tiny causal-LM presets.

Every offline key's ``algorithms/<key>/tiny.yaml`` trains a random tiny Llama + LoRA with random
tiny score models (no download): the test checks the run folder a user relies on (final
weights, metrics.jsonl with the documented keys, the resolved config, checkpoints holding the
multiplier), then that an interrupted run resumed from its checkpoint ends bit-identical to an
uninterrupted one, that a rerun is served from the sample/score cache, and that mistakes get
one-line errors.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from constrained_align.algorithms import REGISTRY, load_run_config
from constrained_align.cli import main
from constrained_align.runner import log as lm_run

OFFLINE = sorted(k for k, spec in REGISTRY.items() if spec.family == "offline")
DUAL_ON_POLICY = {"c_dpo", "caid"}  # keys whose records carry an on-policy cost estimate


def read_metrics(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def untimed(records: list[dict]) -> list[dict]:
    """Records without the wall-clock fields (``time/*``, ``tokens/s``), which never repeat."""
    return [
        {k: v for k, v in r.items() if not k.startswith(("time/", "tokens/s"))} for r in records
    ]


def adapter(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "final" / "adapter_model.safetensors")


@pytest.mark.parametrize("key", OFFLINE)
def test_tiny_preset_trains_from_the_cli(key, tmp_path, capsys):
    out = tmp_path / key
    assert main(["train", f"{key}:tiny", "--output-dir", str(out), "--quiet"]) == 0
    assert "done:" in capsys.readouterr().out
    records = read_metrics(out)
    assert records, "no metrics were logged"
    for record in records:
        for name in ("loss/policy", "rewards/chosen", "rewards/margins", "kl", "stage"):
            assert name in record, f"{key}: '{name}' missing from {record}"
    if REGISTRY[key].has_multiplier:  # from the record where λ exists (after pecan's forks)
        assert "dual/lambda" in records[-1]
        assert (out / "final" / "primal_dual.json").is_file()
    if key in DUAL_ON_POLICY:
        assert "constraint/cost_estimate" in records[-1]
    weights = adapter(out)
    assert weights and all(torch.isfinite(w).all() for w in weights.values())
    assert any(name.endswith("lora_B.weight") and w.abs().sum() > 0 for name, w in weights.items())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["optimizer_steps"] > 0 and "before" in summary and "after" in summary
    again = load_run_config(str(out / "config.yaml"))
    assert again == load_run_config(f"{key}:tiny", ["progress=false"])
    checkpoints = sorted((out / "checkpoints").glob("epoch-*"))
    assert checkpoints and (checkpoints[-1] / "state.pt").is_file()
    if REGISTRY[key].has_multiplier:
        assert (checkpoints[-1] / "primal_dual.json").is_file()


def interrupt_after(monkeypatch: pytest.MonkeyPatch, records: int) -> None:
    """Make the run stop (as a killed process would) right after its ``records``-th record."""
    original = lm_run.RunLog.__call__

    def call(self, record):
        original(self, record)
        if len(self.records) == records:
            raise KeyboardInterrupt

    monkeypatch.setattr(lm_run.RunLog, "__call__", call)


@pytest.mark.parametrize(
    ("key", "overrides", "stop_after"),
    [
        ("c_dpo", ["rounds=3", "tol=0"], 2),  # λ moved by two dual steps before the stop
        ("pecan", ["pre_align_epochs=2"], 3),  # mid-way through the second fork's pre-alignment
        ("sacpo", ["epochs=2"], 3),  # after the reference swap
    ],
)
def test_resume_is_bit_identical(key, overrides, stop_after, tmp_path, monkeypatch):
    """Straight run vs interrupted run + ``--resume``: same weights, records and λ."""
    sets = [arg for o in overrides for arg in ("--set", o)]
    straight = tmp_path / "straight"
    assert main(["train", f"{key}:tiny", *sets, "--output-dir", str(straight), "--quiet"]) == 0
    resumed = tmp_path / "resumed"
    with monkeypatch.context() as patch:
        interrupt_after(patch, stop_after)
        with pytest.raises(KeyboardInterrupt):
            main(["train", f"{key}:tiny", *sets, "--output-dir", str(resumed), "--quiet"])
    assert len(read_metrics(resumed)) == stop_after  # each record is written when it is logged
    args = ["train", f"{key}:tiny", *sets, "--output-dir", str(resumed), "--quiet", "--resume"]
    assert main(args) == 0
    assert untimed(read_metrics(resumed)) == untimed(read_metrics(straight))
    a, b = adapter(straight), adapter(resumed)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    s1 = json.loads((straight / "summary.json").read_text())
    s2 = json.loads((resumed / "summary.json").read_text())
    assert s1["lambda_trajectory"] == s2["lambda_trajectory"]
    assert s1["after"] == s2["after"]


def test_rerun_reuses_cached_samples_and_scores(tmp_path):
    cache = tmp_path / "cache"
    for name in ("first", "second"):
        args = ["train", "c_dpo:tiny", "--set", f"cache_dir={cache}", "--quiet"]
        assert main([*args, "--output-dir", str(tmp_path / name)]) == 0
    first = json.loads((tmp_path / "first" / "summary.json").read_text())["cache"]
    second = json.loads((tmp_path / "second" / "summary.json").read_text())["cache"]
    assert first["misses"] > 0
    assert second == {"hits": first["hits"] + first["misses"], "misses": 0}
    assert untimed(read_metrics(tmp_path / "first")) == untimed(read_metrics(tmp_path / "second"))


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["train", "c_dpo:testbed", "--output-dir", str(tmp_path / "a")]) == 2
    assert "closed-form testbed" in capsys.readouterr().err
    assert main(["train", "dpo:tiny", "--output-dir", str(tmp_path / "b"), "--resume"]) == 2
    assert "no complete checkpoint" in capsys.readouterr().err
    # An unbounded one-shot dual (limit below every sampled cost) is reported, not clamped.
    args = ["train", "mocan:tiny", "--set", "cost_limit=-5", "--quiet"]
    assert main([*args, "--output-dir", str(tmp_path / "c")]) == 2
    assert "unbounded" in capsys.readouterr().err
    assert main(["train", "dpo:tiny", "--quiet", "--output-dir", str(tmp_path / "d")]) == 0
    assert main(["train", "dpo:tiny", "--quiet", "--output-dir", str(tmp_path / "d")]) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_set_reaches_nested_fields_on_every_offline_key():
    for key in OFFLINE:
        config = load_run_config(f"{key}:tiny", ["beta=0.3", "max_new_tokens=5", "lr=0.01"])
        assert config.train.beta == 0.3 and config.generation.max_new_tokens == 5
        assert config.train.optim.lr == 0.01
        if REGISTRY[key].has_multiplier:
            config = load_run_config(f"{key}:tiny", ["cost_limit=-0.5", "lambda_init=2"])
            assert (config.train.dual.cost_limit, config.train.dual.lambda_init) == (-0.5, 2.0)


def test_full_fine_tuning_saves_safetensors(tmp_path):
    """``lora: false`` trains every weight against a frozen copy and saves the whole model."""
    out = tmp_path / "full"
    args = ["train", "dpo:tiny", "--set", "lora=false", "--set", "epochs=1", "--quiet"]
    assert main([*args, "--output-dir", str(out)]) == 0
    final = out / "final"
    assert (final / "model.safetensors").is_file() and (final / "config.json").is_file()
    assert not (final / "adapter_model.safetensors").exists()
    from transformers import AutoModelForCausalLM

    from constrained_align.models.tiny import tiny_causal_lm

    trained = AutoModelForCausalLM.from_pretrained(final).state_dict()
    initial = tiny_causal_lm(0).state_dict()  # the preset's seed-0 weights
    assert trained.keys() == initial.keys()
    assert any(not torch.equal(trained[k], initial[k]) for k in initial)


def test_resume_refuses_other_settings_and_a_missing_cache(tmp_path, capsys):
    """A checkpoint resumes only the run that wrote it: other settings are one clear error
    (before config.yaml is touched), and so is a resume without the sample cache."""
    out = tmp_path / "run"
    assert main(["train", "dpo:tiny", "--output-dir", str(out), "--quiet"]) == 0
    config = (out / "config.yaml").read_text()
    args = ["train", "dpo:tiny", "--output-dir", str(out), "--quiet", "--resume"]
    assert main([*args, "--set", "lr=0.5"]) == 2
    assert "other settings" in capsys.readouterr().err
    assert (out / "config.yaml").read_text() == config
    assert main([*args, "--set", "disk_cache=false"]) == 2
    assert "disk_cache is off" in capsys.readouterr().err


def test_a_failed_start_does_not_lock_the_folder(tmp_path, capsys):
    out = tmp_path / "run"
    bad = ["train", "mocan:tiny", "--set", "cost_limit=-5", "--quiet", "--output-dir", str(out)]
    assert main(bad) == 2  # fails in the dual, before any record
    assert main(["train", "mocan:tiny", "--quiet", "--output-dir", str(out)]) == 0


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("pair_batch_size=0", "data.pair_batch_size must be at least 1"),
        ("max_new_tokens=0", "generation.max_new_tokens must be at least 1"),
        ("max_prompts=0", "data.max_prompts must be at least 1"),
        ("policy=/no/such/model", "model.policy: cannot load"),
        ("lora_target_modules=[nope]", "model.lora_target_modules"),
    ],
)
def test_bad_lm_settings_are_one_line_errors(setting, message, tmp_path, capsys):
    args = ["train", "dpo:tiny", "--set", setting, "--quiet", "--output-dir", str(tmp_path)]
    assert main(args) == 2
    assert message in capsys.readouterr().err
