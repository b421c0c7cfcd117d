"""Config sections shared by every algorithm: the dual, the optimizer, the testbed, the run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from constrained_align.config.core import param
from constrained_align.config.lm import (
    DataConfig,
    GenerationConfig,
    OutputConfig,
    PolicyConfig,
    ScorersConfig,
    TaskConfig,
)

MultiplierName = Literal["log_sgd", "projected", "pid", "fixed", "exact"]


@dataclass
class PIDConfig:
    """Gains of the PID Lagrangian rule (Stooke et al., arXiv 2007.03964; CPPOPID defaults)."""

    kp: float = param(0.1, "proportional gain K_P on the EMA of the violation")
    ki: float = param(0.01, "integral gain K_I; plain gradient ascent is the I-only controller")
    kd: float = param(0.01, "derivative gain K_D on the rise of the smoothed cost")
    delay: int = param(10, "δ: updates between the two smoothed costs of the derivative term")
    alpha_p: float = param(0.95, "EMA factor of the proportional term")
    alpha_d: float = param(0.95, "EMA factor of the derivative term")


@dataclass
class DualConfig:
    """The Lagrange multiplier λ on the cost constraint E[c] ≤ cost_limit (c > 0 is unsafe)."""

    multiplier: MultiplierName = param(
        "projected", "rule that moves λ: log_sgd | projected | pid | fixed | exact"
    )
    cost_limit: float = param(0.0, "d in E[c] ≤ d; the library's only sign convention")
    lambda_init: float = param(0.0, "initial λ (must be > 0 for log_sgd)")
    lambda_lr: float | None = param(
        None, "dual step size; null = the safe bound 8β/(c_max − c_min)² of ALGORITHMS.md §1.4"
    )
    lambda_max: float | None = param(None, "upper clamp on λ (Safe RLHF uses 5); null = none")
    dual_update_every: int = param(1, "update λ every this many dual opportunities")
    dual_delay_steps: int = param(0, "no λ update before this many steps (Safe RLHF delay)")
    cost_window: int = param(
        128, "per-sample costs averaged by the estimator; 0 = mean of the current batch only"
    )
    pid: PIDConfig = param(PIDConfig(), "gains used when multiplier = pid")


@dataclass
class OptimConfig:
    """Optimizer of the policy (and critics) on the current backend."""

    name: Literal["adam", "adamw", "sgd"] = param("adam", "optimizer")
    lr: float = param(0.1, "learning rate of the policy")
    weight_decay: float = param(0.0, "weight decay (decoupled for adamw)")
    max_grad_norm: float | None = param(
        None, "clip the policy's gradient norm to this (language models); null = no clipping"
    )
    critic_lr: float = param(0.1, "learning rate of the value heads (online keys with critics)")


@dataclass
class TestbedConfig:
    """The closed-form bandit of ALGORITHMS.md §5 the run trains on (β and d come from the
    algorithm section, so the bandit and the algorithm cannot disagree)."""

    instance: Literal["A", "generated"] = param("A", "Instance A (§5.3) or the §5.5 generator")
    instance_seed: int = param(0, "seed of the §5.5 generator (numpy default_rng)")
    num_prompts: int = param(32, "K, prompts of the generated instance")
    num_responses: int = param(16, "N, responses per prompt of the generated instance")
    mode: Literal["population", "sampled"] = param(
        "population", "exact expectations over all responses/pairs, or finite seeded samples"
    )
    pair_distribution: Literal["reference", "uniform"] = param(
        "reference", "μ, the policy that drew the preference pairs: π_ref or uniform"
    )
    pairs_per_prompt: int = param(64, "sampled mode: preference pairs drawn per prompt")


@dataclass
class RunConfig:
    """One training run: which registry key, on what, with which settings."""

    algorithm: str = param(doc="registry key, e.g. c_dpo (see `constrained-align list`)")
    seed: int = param(0, "seed of every random draw in the run")
    backend: Literal["testbed", "causal_lm"] = param(
        "testbed", "the closed-form bandit, or a transformers causal LM"
    )
    task: TaskConfig = param(TaskConfig(), "sample counts of the dual and on-policy estimates")
    testbed: TestbedConfig = param(TestbedConfig(), "closed-form bandit settings")
    model: PolicyConfig = param(PolicyConfig(), "causal_lm: the policy model")
    generation: GenerationConfig = param(GenerationConfig(), "causal_lm: sampling")
    data: DataConfig = param(DataConfig(), "causal_lm: pairs and prompts")
    scorers: ScorersConfig = param(ScorersConfig(), "causal_lm: reward and cost models")
    output: OutputConfig = param(OutputConfig(), "causal_lm: checkpoints and caches")
    train: Any = param(None, "the algorithm's own settings (its config class)")
