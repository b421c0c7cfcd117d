"""End-to-end runs of the online keys (ppo_lag, ppo_shaping, grpo_lag) on the tiny causal LM.

The tiny presets train a random tiny Llama + LoRA (critics are further LoRA adapters on the same
base) with random tiny score models whose costs lie in [0.23, 0.35]. A limit of 0 is therefore
violated (λ must rise) and a limit of 1 slack (λ must fall to 0 under the projected rule). A run
interrupted after k steps and resumed ends bit-identical to a straight run.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from constrained_align.algorithms import load_run_config
from constrained_align.cli import main
from constrained_align.runner import log as lm_run

ONLINE = ["ppo_lag", "ppo_shaping", "grpo_lag"]
EVERY_STEP = (
    "dual/lambda",
    "constraint/cost_estimate",
    "constraint/violation",
    "rollout/reward",
    "rollout/cost",
    "rollout/kl",
    "loss/policy",
    "policy/clipfrac",
    "time/generation",
    "time/scoring",
    "time/training",
    "tokens/s",
)


def train(key: str, out: Path, *sets: str) -> list[dict]:
    args = ["train", f"{key}:tiny", "--output-dir", str(out), "--quiet"]
    for item in sets:
        args += ["--set", item]
    assert main(args) == 0
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("key", ONLINE)
def test_online_tiny_preset_trains_from_the_cli(key, tmp_path):
    records = train(key, tmp_path / key)
    assert len(records) == load_run_config(f"{key}:tiny").train.steps
    for record in records:
        for name in EVERY_STEP:
            assert name in record, f"{key}: '{name}' missing"
        if key != "grpo_lag":
            assert "loss/value_reward" in record
        if key == "ppo_lag":
            assert "loss/value_cost" in record
    weights = load_file(tmp_path / key / "final" / "adapter_model.safetensors")
    assert any(n.endswith("lora_B.weight") and w.abs().sum() > 0 for n, w in weights.items())
    state = torch.load(
        sorted((tmp_path / key / "checkpoints").glob("epoch-*"))[-1] / "state.pt",
        weights_only=False,
    )
    critics = state["backends"]["policy"]["critics"]
    expected = {"ppo_lag": {"reward", "cost"}, "ppo_shaping": {"reward"}, "grpo_lag": set()}
    assert set(critics) == expected[key]


@pytest.mark.parametrize("key", ["ppo_lag", "grpo_lag"])
def test_lambda_rises_when_the_constraint_is_violated(key, tmp_path):
    records = train(key, tmp_path / "up", "cost_limit=0.0", "lambda_init=1.0")
    lams = [r["dual/lambda"] for r in records]
    assert all(r["constraint/violation"] > 0 for r in records)
    assert all(b > a for a, b in itertools.pairwise(lams)) and lams[0] > 1.0


@pytest.mark.parametrize("key", ["ppo_lag", "grpo_lag"])
def test_lambda_falls_to_zero_when_the_constraint_is_slack(key, tmp_path):
    sets = ["multiplier=projected", "cost_limit=1.0", "lambda_init=0.5", "lambda_lr=0.2"]
    records = train(key, tmp_path / "down", *sets)
    lams = [r["dual/lambda"] for r in records]
    assert all(r["constraint/violation"] < 0 for r in records)
    # projected: λ ← max(0, λ + 0.2·(Ĵ − 1)) with Ĵ − 1 ≈ −0.7: 0.5 → ~0.36 → ~0.22 → … → 0
    assert lams[0] < 0.5 and lams[-1] == 0.0
    assert all(b <= a for a, b in itertools.pairwise(lams))


def test_ppo_lag_resume_is_bit_identical(tmp_path, monkeypatch):
    """4 steps straight == 2 steps, interrupt, ``--resume``, 2 more steps."""
    straight = train("ppo_lag", tmp_path / "straight", "steps=4")
    original = lm_run.RunLog.__call__

    def call(self, record):
        original(self, record)
        if len(self.records) == 2:
            raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(lm_run.RunLog, "__call__", call)
        with pytest.raises(KeyboardInterrupt):
            train("ppo_lag", tmp_path / "resumed", "steps=4")
    args = ["train", "ppo_lag:tiny", "--set", "steps=4", "--quiet", "--resume"]
    assert main([*args, "--output-dir", str(tmp_path / "resumed")]) == 0
    resumed = [
        json.loads(line)
        for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    ]
    timing = ("time/", "tokens/s")
    strip = [{k: v for k, v in r.items() if not k.startswith(timing)} for r in straight]
    assert [{k: v for k, v in r.items() if not k.startswith(timing)} for r in resumed] == strip
    a = load_file(tmp_path / "straight" / "final" / "adapter_model.safetensors")
    b = load_file(tmp_path / "resumed" / "final" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_set_reaches_the_multiplier_on_every_online_key():
    for key in ONLINE:
        config = load_run_config(f"{key}:tiny", ["cost_limit=-0.5", "lambda_init=2"])
        assert (config.train.dual.cost_limit, config.train.dual.lambda_init) == (-0.5, 2.0)


def test_ptx_term_raises_the_likelihood_of_the_supervised_responses(tmp_path):
    """With ``ptx_coeff`` the actor loss adds the mean token NLL of the pairs' preferred
    responses (the tiny preset's 8 pairs form one PTX batch, the same every step): its NLL
    falls over the run. Without it there is no PTX term."""
    records = train("ppo_lag", tmp_path / "ptx", "ptx_coeff=5.0", "lr=0.01")
    nll = [r["loss/ptx"] for r in records]
    assert nll[-1] < nll[0] - 0.05
    plain = train("ppo_lag", tmp_path / "plain", "steps=1")
    assert "loss/ptx" not in plain[0]


def test_ptx_needs_a_task_with_supervised_responses():
    from constrained_align.config import ConfigError
    from constrained_align.testbed import run

    with pytest.raises(ConfigError, match="ptx_coeff"):
        run("ppo_lag", preset="testbed", ptx_coeff=0.1, steps=1)
