"""Settings every offline (preference-learning) key shares."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from constrained_align.config import OptimConfig, param


@dataclass
class OfflineConfig:
    """Shared settings of the DPO-family keys."""

    beta: float = param(0.1, "KL weight β of the objective and of the DPO loss")
    epochs: int = param(3, "passes over the preference pairs (per stage or round)")
    label_mode: Literal["soft", "sampled"] = param(
        "soft",
        "relabelled pairs keep the probability σ(Δr_λ) as a soft label (lower variance), or "
        "draw one Bernoulli label per pair (the reference code)",
    )
    temperature: float = param(
        1.0, "Bradley-Terry temperature T of relabelling; 1 for score models trained with BT"
    )
    optim: OptimConfig = param(OptimConfig(), "optimizer of the policy")
