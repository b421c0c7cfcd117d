"""Algorithms: the registry, run-config loading, one module per key and the shared steps.

Importing this package registers every key. Each key's module reads top to bottom: config,
loss composition, dual signal, register; no key imports another. What several keys share lives
in named modules: :mod:`.families` (config bases, papers), :mod:`.pairs` (labels and the pair
loop of the offline keys), :mod:`.duals` (the one-shot dual on reference samples) and
:mod:`.rollout` (the online keys' rollout, advantages and PPO update). Everything here talks to
the :class:`~constrained_align.types.PolicyBackend` and ``Scorer`` interfaces only.
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
from constrained_align.algorithms.run_config import load_run_config

__all__ = [
    "REGISTRY",
    "AlgorithmSpec",
    "Paper",
    "RunContext",
    "RunResult",
    "get",
    "load_run_config",
    "register",
]
