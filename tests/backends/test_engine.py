"""The optimizer step through accelerate's engine, in one process: gradient accumulation,
mixed precision, and the loss closures the engine splits into micro-batches.

(The engine's all-reduce over processes is checked by the launched runs of
``tests/runner/test_lm_distributed.py``.)
"""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model

from constrained_align.backends.causal_lm.engine import Engine
from constrained_align.backends.causal_lm.policy import CausalLMPolicy, LMSettings
from constrained_align.backends.causal_lm.sequences import PromptBatch
from constrained_align.backends.causal_lm.weights import LoraWeights
from constrained_align.config import ConfigError, OptimConfig
from constrained_align.models.tiny import tiny_causal_lm, tiny_tokenizer

TOK = tiny_tokenizer()
PROMPTS = PromptBatch(["hi", "hello there, how are you?", "x"], [[], [], []])
RESPONSES = ["yes", "no way at all", "z"]
WEIGHT = torch.tensor([1.0, 2.0, 3.0])  # uneven, so micro-batch shares are not 1/k


def policy(engine: Engine) -> CausalLMPolicy:
    model = tiny_causal_lm(0)
    torch.manual_seed(1)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    weights = LoraWeights(get_peft_model(model, config))
    optim = OptimConfig(name="adam", lr=1e-2, max_grad_norm=1.0)
    return CausalLMPolicy(weights, TOK, settings=LMSettings(), optim=optim, engine=engine)


def weighted_nll(backend: CausalLMPolicy):
    """``closure(rows)``: the weighted mean negative log-likelihood of those rows."""
    seqs = backend.encode(PROMPTS, RESPONSES)

    def closure(rows):
        part = seqs if rows is None else seqs.index(rows)
        w = WEIGHT if rows is None else WEIGHT[rows]
        return -(backend.logprobs(part).sequence * w).sum() / w.sum()

    return closure


def trained(engine: Engine, steps: int = 3) -> tuple[list[float], list[torch.Tensor]]:
    backend = policy(engine)
    closure = weighted_nll(backend)
    losses = [backend.step(closure, WEIGHT) for _ in range(steps)]
    return losses, [p.detach().clone() for p in backend.trainable()]


@pytest.mark.parametrize("accumulation", [2, 4])
def test_accumulated_micro_batches_take_the_whole_batch_step(accumulation):
    # 4 micro-batches of 3 rows: one is empty and runs a row at share 0
    whole_losses, whole = trained(Engine())
    losses, split = trained(Engine(gradient_accumulation_steps=accumulation))
    torch.testing.assert_close(losses, whole_losses, rtol=1e-6, atol=0)
    for a, b in zip(split, whole):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert max(float(p.abs().max()) for p in whole) > 0  # the adapters moved


def test_a_closure_without_rows_cannot_be_split():
    backend = policy(Engine(gradient_accumulation_steps=2))
    seqs = backend.encode(PROMPTS, RESPONSES)
    with pytest.raises(ConfigError, match="gradient_accumulation_steps to 1"):
        backend.step(lambda: -backend.logprobs(seqs).sequence.mean())
    assert backend.steps == 0


def test_bf16_autocasts_the_training_pass_and_keeps_fp32_weights():
    backend = policy(Engine(mixed_precision="bf16"))
    closure = weighted_nll(backend)
    seen = []

    def watched(rows):
        seen.append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu"))
        return closure(rows)

    before = [p.detach().clone() for p in backend.trainable()]
    backend.step(watched, WEIGHT)
    assert seen == [torch.bfloat16]
    assert all(p.dtype == torch.float32 for p in backend.trainable())
    assert any(not torch.equal(a, p) for a, p in zip(before, backend.trainable()))
    _, fp32 = trained(Engine(), steps=1)  # a new run in the same process may change precision
    assert all(p.dtype == torch.float32 for p in fp32)


@pytest.mark.parametrize("flag", ["ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"])
def test_a_sharded_engine_is_refused_with_the_supported_alternatives(monkeypatch, flag):
    """What ``accelerate launch`` sets for an FSDP or DeepSpeed config (on CPUs accelerate
    would otherwise fall back to plain data parallelism silently)."""
    monkeypatch.setenv(flag, "true")
    with pytest.raises(ConfigError, match=r"ddp\.yaml.*TRL plug-ins"):
        Engine()
