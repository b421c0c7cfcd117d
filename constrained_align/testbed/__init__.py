"""The closed-form testbed (ALGORITHMS.md §5): exact optima and a runner for every key.

Public API::

    from constrained_align.testbed import Bandit, instance_a, generated, run
    bandit = instance_a()                 # β = 0.5, d = −0.3, λ* = 1.067480
    bandit.optimum()                      # π*, with .lam .policy .expected_reward/_cost .kl
    result = run("c_dpo", bandit)         # .policy (K, N), .lam, .history

It sits above the algorithms in the import layers because its runner trains registry keys;
nothing below it needs it (the tabular backend takes plain arrays).
"""

from constrained_align.testbed.bandit import Bandit, InfeasibleError, Optimum, tv_distance
from constrained_align.testbed.data import TabularTask, population_pairs, sampled_pairs
from constrained_align.testbed.instances import INSTANCE_A_RESPONSES, generated, instance_a
from constrained_align.testbed.runner import TestbedResult, run
from constrained_align.testbed.targets import Target, both_placement_optimum, target_for

__all__ = [
    "INSTANCE_A_RESPONSES",
    "Bandit",
    "InfeasibleError",
    "Optimum",
    "TabularTask",
    "Target",
    "TestbedResult",
    "both_placement_optimum",
    "generated",
    "instance_a",
    "population_pairs",
    "run",
    "sampled_pairs",
    "target_for",
    "tv_distance",
]
