"""Config sections every algorithm shares, whatever the backend: the dual and the optimizer."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from constrained_align.config.checks import (
    AT_LEAST_1,
    FRACTION,
    LEARNING_RATE,
    NON_NEGATIVE,
    POSITIVE,
    ConfigError,
)
from constrained_align.config.core import param

MultiplierName = Literal["log_sgd", "projected", "pid", "fixed", "exact"]


@dataclass
class PIDConfig:
    """Gains of the PID Lagrangian rule (Stooke et al., arXiv 2007.03964; CPPOPID defaults)."""

    kp: float = param(0.1, "proportional gain K_P on the EMA of the violation", check=NON_NEGATIVE)
    ki: float = param(
        0.01,
        "integral gain K_I; plain gradient ascent is the I-only controller",
        check=NON_NEGATIVE,
    )
    kd: float = param(
        0.01, "derivative gain K_D on the rise of the smoothed cost", check=NON_NEGATIVE
    )
    delay: int = param(
        10, "δ: updates between the two smoothed costs of the derivative term", check=AT_LEAST_1
    )
    alpha_p: float = param(0.95, "EMA factor of the proportional term", check=FRACTION)
    alpha_d: float = param(0.95, "EMA factor of the derivative term", check=FRACTION)


@dataclass
class DualConfig:
    """The Lagrange multiplier λ on the cost constraint E[c] ≤ cost_limit (c > 0 is unsafe)."""

    multiplier: MultiplierName = param(
        "projected", "rule that moves λ: log_sgd | projected | pid | fixed | exact"
    )
    cost_limit: float = param(0.0, "d in E[c] ≤ d; the library's only sign convention")
    lambda_init: float = param(0.0, "initial λ (must be > 0 for log_sgd)", check=NON_NEGATIVE)
    lambda_lr: float | None = param(
        None,
        "dual step size; null = the safe bound 8β/(c_max − c_min)² of ALGORITHMS.md §1.4",
        check=POSITIVE,
    )
    lambda_max: float | None = param(
        None, "upper clamp on λ (Safe RLHF uses 5); null = none", check=POSITIVE
    )
    dual_update_every: int = param(
        1, "update λ every this many dual opportunities", check=AT_LEAST_1
    )
    dual_delay_steps: int = param(
        0, "no λ update before this many steps (Safe RLHF delay)", check=NON_NEGATIVE
    )
    cost_window: int = param(
        128,
        "per-sample costs averaged by the estimator; 0 = mean of the current batch only",
        check=NON_NEGATIVE,
    )
    pid: PIDConfig = param(PIDConfig(), "gains used when multiplier = pid")
    constraints: dict[str, float] = param(
        {},
        "further constraints, name → cost limit (E[c_name] ≤ limit), each with its own λ moved "
        "by this section's rule; their costs come from scorers.constraints (grpo_lag)",
    )

    def check_fields(self) -> None:
        """Rules that involve several fields of the section."""
        if "cost" in self.constraints:
            raise ConfigError("dual.constraints: 'cost' is the main constraint (cost_limit)")
        if self.multiplier == "log_sgd" and self.lambda_init <= 0:
            raise ConfigError(
                f"multiplier log_sgd moves log λ: lambda_init must be > 0, got {self.lambda_init}"
            )
        if self.lambda_max is not None and self.lambda_init > self.lambda_max:
            raise ConfigError(
                f"lambda_init {self.lambda_init} is above lambda_max {self.lambda_max}"
            )


@dataclass
class OptimConfig:
    """Optimizer of the policy (and critics) on the current backend."""

    name: Literal["adam", "adamw", "sgd"] = param("adam", "optimizer")
    lr: float | None = param(
        None,
        "learning rate of the policy; null = 0.1 on the testbed, 1e-4 on a language model "
        "(above 10 no optimizer step means anything)",
        check=LEARNING_RATE,
    )
    weight_decay: float = param(0.0, "weight decay (decoupled for adamw)", check=NON_NEGATIVE)
    max_grad_norm: float | None = param(
        None,
        "clip the policy's gradient norm to this (language models); null = no clipping",
        check=POSITIVE,
    )
    critic_lr: float | None = param(
        None,
        "learning rate of the critics (online keys); null = 0.1 on the testbed, 5e-4 on an LM",
        check=LEARNING_RATE,
    )

    def resolved(self, *, lr: float, critic_lr: float) -> OptimConfig:
        """A copy with the null learning rates replaced by a backend's defaults."""
        return replace(
            self,
            lr=lr if self.lr is None else self.lr,
            critic_lr=critic_lr if self.critic_lr is None else self.critic_lr,
        )


#: Learning rates of the closed-form testbed (tabular logits, float64) when a config leaves
#: them null, and of a language model (LoRA adapters or full weights).
TESTBED_LR = 0.1
LM_LR = 1e-4
LM_CRITIC_LR = 5e-4
