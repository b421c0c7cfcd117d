"""Algorithms: the registry and one module per key.

Importing this package registers every key. Each module reads top to bottom: config, loss
composition, dual signal, register.
"""

from constrained_align.algorithms import (  # noqa: F401  (registration side effect)
    bfpo,
    c_dpo,
    caid,
    dpo,
    grpo_lag,
    mocan,
    pecan,
    ppo_lag,
    ppo_shaping,
    sacpo,
    safe_dpo,
)
from constrained_align.algorithms.registry import (
    REGISTRY,
    AlgorithmSpec,
    Paper,
    RunContext,
    RunResult,
    get,
    register,
)

__all__ = ["REGISTRY", "AlgorithmSpec", "Paper", "RunContext", "RunResult", "get", "register"]
