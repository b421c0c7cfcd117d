"""One multiplier state file for every writer and reader: the ``primal_dual.json`` a ``train``
run leaves in ``final/`` loads into ``ConstrainedDPOTrainer`` and ``LagrangianCallback`` (the
trainers' own checkpoints are checked in their test files)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
from trl import GRPOTrainer

from constrained_align.cli import main
from constrained_align.config import DualConfig
from constrained_align.integrations.trl import make_lagrangian
from constrained_align.models.tiny import tiny_causal_lm, tiny_tokenizer
from constrained_align.primal_dual import load_dual_state, read_dual_state
from tests.integrations.test_trl_dpo import canonical_rows, make_trainer
from tests.integrations.test_trl_lagrangian import (
    byte_mean_cost,
    distinct_reward,
    make_args,
    prompts,
)

# c_dpo's multiplier: projected, one batch per estimate (cost_window 0).
C_DPO_DUAL = DualConfig(multiplier="projected", lambda_init=0.0, lambda_lr=0.1, cost_window=0)


@pytest.fixture(scope="module")
def run_final(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("run") / "c_dpo"
    assert main(["train", "c_dpo:tiny", "--output-dir", str(out), "--quiet"]) == 0
    # λ after the run's last dual step (the summary's "lambda" is the last round's training λ)
    lam = read_dual_state(out / "final")["state"]["constraints"]["cost"]["rule"]["value"]
    assert lam > 0
    return out / "final", lam


def test_train_run_state_loads_into_constrained_dpo_trainer(run_final, tmp_path):
    final, lam = run_final
    trainer = make_trainer(tmp_path, canonical_rows(), loss="lagrangian", dual=C_DPO_DUAL)
    assert trainer.primal_dual.lam() == 0.0
    step = load_dual_state(trainer.primal_dual, final)
    assert trainer.primal_dual.lam() == pytest.approx(lam, abs=0.0)
    assert step == read_dual_state(final)["global_step"] > 0


def test_train_run_state_loads_into_lagrangian_callback(run_final, tmp_path):
    final, lam = run_final
    policy = tmp_path / "policy"
    tiny_causal_lm(0).save_pretrained(policy)
    tiny_tokenizer().save_pretrained(policy)
    _, callback = make_lagrangian(
        GRPOTrainer,
        str(policy),
        reward=distinct_reward,
        cost=byte_mean_cost,
        args=make_args("grpo", tmp_path / "grpo"),
        dual=C_DPO_DUAL,
        train_dataset=prompts(),
        processing_class=tiny_tokenizer(),
    )
    callback.load(final)
    assert callback.lam == pytest.approx(lam, abs=0.0)
