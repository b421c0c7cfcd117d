"""What the keys of one family share: the offline and online config bases, Safe RLHF's
multiplier defaults, and the papers several keys implement."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from constrained_align.algorithms.registry import Paper
from constrained_align.config import (
    AT_LEAST_1,
    NON_NEGATIVE,
    POSITIVE,
    UNIT,
    DualConfig,
    OptimConfig,
    param,
)

CAN_PAPER = Paper(
    "One-Shot Safety Alignment for Large Language Models via Optimal Dualization", "2405.19544"
)
SAFE_RLHF = Paper("Safe RLHF: Safe Reinforcement Learning from Human Feedback", "2310.12773")


@dataclass
class OfflineConfig:
    """Shared settings of the DPO-family keys."""

    beta: float = param(0.1, "KL weight β of the objective and of the DPO loss", check=POSITIVE)
    epochs: int = param(
        3, "passes over the preference pairs (per stage or round)", check=AT_LEAST_1
    )
    label_mode: Literal["soft", "sampled"] = param(
        "soft",
        "relabelled pairs keep the probability σ(Δr_λ) as a soft label (lower variance), or "
        "draw one Bernoulli label per pair (the reference code)",
    )
    temperature: float = param(
        1.0,
        "Bradley-Terry temperature T of relabelling; 1 for score models trained with BT",
        check=POSITIVE,
    )
    optim: OptimConfig = param(OptimConfig(), "optimizer of the policy")


@dataclass
class LabelledConfig(OfflineConfig):
    """The offline keys that train on per-response safety labels (SafeDPO, BFPO)."""

    missing_labels: Literal["score", "drop"] = param(
        "score",
        "pairs lacking a helpfulness or a safety label: fill it from the score models "
        "(P(better) = σ(r_1 − r_0), safe ⇔ c ≤ 0) or leave the pair out",
    )


@dataclass
class OnlineConfig:
    """Settings shared by the online keys (Safe RLHF's defaults, ALGORITHMS.md §3.1)."""

    beta: float = param(0.01, "KL weight β (Safe RLHF's kl_coeff)")
    steps: int = param(1000, "RL steps (rollout + update)", check=AT_LEAST_1)
    update_iters: int = param(1, "optimizer passes over each rollout", check=AT_LEAST_1)
    clip_range_ratio: float = param(0.2, "PPO ratio clip ε", check=POSITIVE)
    clip_range_score: float = param(50.0, "per-token reward/cost clamp", check=POSITIVE)
    clip_range_value: float = param(5.0, "value clip around the rollout's values", check=POSITIVE)
    gamma: float = param(1.0, "GAE discount (1.0, hard-coded in Safe RLHF)", check=UNIT)
    gae_lambda: float = param(0.95, "GAE λ (0.95, hard-coded in Safe RLHF)", check=UNIT)
    ptx_coeff: float = param(
        0.0,
        "weight of the PTX term: mean token NLL of a batch of the task's supervised responses, "
        "added to the actor loss each step (Safe RLHF's ptx_coeff); 0 = off",
        check=NON_NEGATIVE,
    )
    optim: OptimConfig = param(OptimConfig(), "optimizer of the policy and critics")


KLPlacement = Literal["reward", "both"]


def safe_rlhf_dual() -> DualConfig:
    """Safe RLHF's multiplier defaults (scripts/ppo-lag.sh): log-λ SGD, λ_init 1, lr 0.1, λ_max 5,
    a window of 128 raw costs, threshold 0."""
    return DualConfig(
        multiplier="log_sgd",
        cost_limit=0.0,
        lambda_init=1.0,
        lambda_lr=0.1,
        lambda_max=5.0,
        cost_window=128,
    )
