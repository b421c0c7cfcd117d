"""Train any registry key on a bandit and compare it with its exact fixed point.

``run("c_dpo", bandit)`` loads the key's testbed preset (``algorithms/c_dpo/testbed.yaml``),
takes β and the cost limit from the bandit (so the two cannot disagree), builds the tabular
backend, the oracle scorer and the pair data, and calls the same ``train`` function a causal LM
run calls.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from constrained_align import algorithms
from constrained_align.algorithms import RunContext, load_run_config
from constrained_align.backends.tabular import TabularPolicy, TabularScorer
from constrained_align.config import ConfigError, TestbedRunConfig
from constrained_align.testbed.bandit import Bandit, tv_distance
from constrained_align.testbed.data import TabularTask, population_pairs, sampled_pairs
from constrained_align.testbed.instances import generated, instance_a
from constrained_align.testbed.targets import Target, target_for


@dataclass
class TestbedResult:
    """Outcome of one testbed run.

    Attributes:
        policy: ``(K, N)`` trained π.
        lam: final λ, or None for keys without a multiplier.
        history: per-step metric dicts (``dual/lambda`` where there is one).
        target: the exact fixed point this key should reach.
        lambda_star: λ* of the constrained problem.
        bandit: the bandit trained on.
        config: the resolved run config.
        seconds: wall time of training.
    """

    __test__ = False  # not a pytest class

    policy: np.ndarray
    lam: float | None
    history: list[dict[str, Any]]
    target: Target
    lambda_star: float
    bandit: Bandit
    config: TestbedRunConfig
    seconds: float
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def tv_to_target(self) -> float:
        """Prompt-averaged TV(π, the key's own target)."""
        return tv_distance(self.policy, self.target.policy, self.bandit.prompt_weights)

    @property
    def tv_to_optimum(self) -> float:
        """Prompt-averaged TV(π, π*)."""
        return tv_distance(
            self.policy, self.bandit.gibbs(self.lambda_star), self.bandit.prompt_weights
        )

    @property
    def expected_cost(self) -> float:
        return self.bandit.expected(self.policy, self.bandit.cost)

    @property
    def expected_reward(self) -> float:
        return self.bandit.expected(self.policy, self.bandit.reward)

    @property
    def violation(self) -> float:
        """[E c − d]_+."""
        return max(0.0, self.expected_cost - self.bandit.cost_limit)

    @property
    def unsafe_mass(self) -> float:
        return self.bandit.unsafe_mass(self.policy)

    @property
    def steps(self) -> int:
        return len(self.history)


def bandit_from_config(config: TestbedRunConfig) -> Bandit:
    """The bandit a run config describes (β and d from its algorithm section)."""
    tb, train = config.testbed, config.train
    cost_limit = train.dual.cost_limit if hasattr(train, "dual") else None
    if tb.instance == "A":
        return instance_a(beta=train.beta, cost_limit=-0.3 if cost_limit is None else cost_limit)
    return generated(
        tb.instance_seed,
        num_prompts=tb.num_prompts,
        num_responses=tb.num_responses,
        beta=train.beta,
        cost_limit=-0.5 if cost_limit is None else cost_limit,
    )


def run(
    algorithm: str,
    bandit: Bandit | None = None,
    *,
    seed: int = 0,
    preset: str = "testbed",
    **overrides: Any,
) -> TestbedResult:
    """Train ``algorithm`` on ``bandit`` with its testbed settings; compare with its target.

    Args:
        algorithm: registry key.
        bandit: the instance; None builds the one the preset names.
        seed: seed of backend sampling, labels and pair draws.
        preset: preset name of the key (``testbed`` by default).
        **overrides: config overrides by dotted path or unique leaf name, e.g.
            ``mode="sampled"``, ``epochs=200``, ``kl_placement="both"``.
    """
    config = load_run_config(f"{algorithm}:{preset}", {"seed": seed, **overrides})
    if not isinstance(config, TestbedRunConfig):
        raise ConfigError(f"{algorithm}:{preset} is not a testbed preset (backend: testbed)")
    if bandit is None:
        bandit = bandit_from_config(config)
    train = config.train
    train.beta = bandit.beta
    if hasattr(train, "dual"):
        train.dual.cost_limit = bandit.cost_limit
    if hasattr(train, "reference_cost"):
        train.reference_cost = bandit.expected(bandit.ref_probs, bandit.cost)
    backend, task = build_tabular(config, bandit)
    ctx = RunContext(
        backend=backend,
        scorer=TabularScorer(bandit.reward, bandit.cost),
        task=task,
        seed=config.seed,
    )
    # Tables of near-deterministic policies underflow to subnormal float64 numbers, which are
    # ~50× slower on CPUs; flushing them to zero changes no result above 1e-300.
    torch.set_flush_denormal(True)
    try:
        start = time.perf_counter()
        result = algorithms.get(algorithm).train(train, ctx)
        seconds = time.perf_counter() - start
    finally:
        torch.set_flush_denormal(False)
    return TestbedResult(
        policy=backend.policy(),
        lam=result.lam,
        history=result.history,
        # Sampled runs are judged against the population fixed point, not the empirical one.
        target=target_for(
            algorithm, train, bandit, population_pairs(bandit, pair_mu(config, bandit))
        ),
        lambda_star=bandit.lambda_star(),
        bandit=bandit,
        config=config,
        seconds=seconds,
        extras=result.extras,
    )


def pair_mu(config: TestbedRunConfig, bandit: Bandit) -> np.ndarray | None:
    """μ of the preference pairs: None for π_ref, else the uniform table."""
    if config.testbed.pair_distribution == "reference":
        return None
    k, n = bandit.shape
    return np.full((k, n), 1.0 / n)


def build_tabular(config: TestbedRunConfig, bandit: Bandit) -> tuple[TabularPolicy, TabularTask]:
    """The tabular backend and task of a run config."""
    tb = config.testbed
    backend = TabularPolicy(
        bandit.ref_probs,
        mode=tb.mode,
        optim=config.train.optim,
        prompt_weights=bandit.prompt_weights,
        seed=config.seed,
    )
    mu = pair_mu(config, bandit)
    if tb.mode == "population":
        pairs = population_pairs(bandit, mu)
    else:
        pairs = sampled_pairs(bandit, tb.pairs_per_prompt, seed=config.seed, mu=mu)
    task = TabularTask(
        pairs=pairs,
        num_prompts=bandit.shape[0],
        samples_per_prompt=config.task.samples_per_prompt,
        reference_samples=config.task.reference_samples,
    )
    return backend, task
