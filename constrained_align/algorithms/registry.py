"""The registry: the single source of truth of which algorithms exist, and their contract.

Each key maps to its config dataclass, family, paper and status, and to a ``train`` function
``train(config, ctx) -> RunResult``: :class:`RunContext` is everything a train function may
use, :class:`RunResult` what it leaves. For each backend, :meth:`AlgorithmSpec.run_config_class`
is the run config whose ``train`` section has the key's config type. The top-level
``algorithms/<key>/`` folders (card, testbed, tiny and paper presets) are kept one-to-one with
this table by a test.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from constrained_align.config import RUN_CONFIGS, ConfigError, RunConfig
from constrained_align.primal_dual import PrimalDual
from constrained_align.types import PolicyBackend, Scorer, Task
from constrained_align.utils.distributed import Reductions

Family = Literal["online", "offline"]
Status = Literal["stable", "experimental"]


@dataclass
class Paper:
    """Citation of the method an algorithm implements."""

    title: str
    arxiv: str | None


@dataclass
class RunContext:
    """Everything a train function may use; it owns nothing else.

    Attributes:
        backend: the policy backend (tabular or causal LM).
        scorer: reward and cost of responses.
        task: prompts and preference pairs.
        seed: seed of the run's random draws (labels, samples).
        log: called with each step's metrics dict (``step`` included).
        primal_dual: the run's multiplier, once the algorithm has made one (:meth:`watch`).
        dist: the cross-process reductions (:mod:`constrained_align.utils.distributed`); the
            identities of one process unless the run was started by ``accelerate launch``.
    """

    backend: PolicyBackend
    scorer: Scorer
    task: Task
    seed: int = 0
    log: Callable[[dict[str, float]], None] = lambda metrics: None
    primal_dual: PrimalDual | None = None
    dist: Reductions = field(default_factory=Reductions)

    def watch(self, primal_dual: PrimalDual) -> PrimalDual:
        """Make the run's multiplier visible to the trainer (checkpoints save its state)."""
        self.primal_dual = primal_dual
        return primal_dual


@dataclass
class RunResult:
    """What a training run leaves: the final multiplier, the metric history, the dual state."""

    lam: float | None
    history: list[dict[str, float]] = field(default_factory=list)
    primal_dual: PrimalDual | None = None
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class AlgorithmSpec:
    """One registry entry."""

    key: str
    config_class: type
    family: Family
    paper: Paper
    status: Status
    train: Callable[[Any, RunContext], RunResult]
    has_multiplier: bool
    summary: str
    multi_constraint: bool = False
    _run_configs: dict[str, type[RunConfig]] = field(default_factory=dict, repr=False)

    def run_config_class(self, backend: str) -> type[RunConfig]:
        """The run config of this key on ``backend`` (``testbed`` or ``causal_lm``): the
        backend's run config with ``train`` typed as this key's config class (made once, so
        two loads of the same run compare equal)."""
        if backend not in RUN_CONFIGS:
            raise ConfigError(f"unknown backend {backend!r}; valid: {', '.join(RUN_CONFIGS)}")
        if backend not in self._run_configs:
            base = RUN_CONFIGS[backend]
            train = field(
                default_factory=self.config_class,
                metadata={"doc": f"the settings of {self.key} ({self.config_class.__name__})"},
            )
            name = f"{self.config_class.__name__.removesuffix('Config')}{base.__name__}"
            cls = dataclasses.make_dataclass(
                name, [("train", self.config_class, train)], bases=(base,)
            )
            cls.__module__ = base.__module__
            self._run_configs[backend] = cls
        return self._run_configs[backend]


REGISTRY: dict[str, AlgorithmSpec] = {}


def register(
    key: str,
    *,
    config: type,
    family: Family,
    paper: Paper,
    summary: str,
    has_multiplier: bool,
    status: Status = "stable",
    multi_constraint: bool = False,
) -> Callable[[Callable[[Any, RunContext], RunResult]], Callable[[Any, RunContext], RunResult]]:
    """Decorator registering ``train`` under ``key``."""

    def wrap(train: Callable[[Any, RunContext], RunResult]) -> Callable[..., RunResult]:
        if key in REGISTRY:
            raise ValueError(f"algorithm '{key}' registered twice")
        REGISTRY[key] = AlgorithmSpec(
            key, config, family, paper, status, train, has_multiplier, summary, multi_constraint
        )
        return train

    return wrap


class UnknownAlgorithmError(ConfigError, KeyError):
    """An algorithm key that is not registered: a config mistake, and a missing mapping key."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def get(key: str) -> AlgorithmSpec:
    """The registry entry of ``key``, with the known keys in the error."""
    if key not in REGISTRY:
        known = ", ".join(sorted(REGISTRY))
        raise UnknownAlgorithmError(f"unknown algorithm '{key}'; known: {known}")
    return REGISTRY[key]
