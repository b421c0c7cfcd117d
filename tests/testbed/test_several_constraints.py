"""Several constraints at once: grpo_lag meets two limits at the exact two-constraint optimum on
the closed-form testbed, and a tiny language-model run trains against a second constraint
whose cost is a Python function over text."""

from __future__ import annotations

import json

import numpy as np
import pytest

from constrained_align import algorithms
from constrained_align.algorithms import RunContext, load_run_config
from constrained_align.backends.tabular import TabularScorer
from constrained_align.cli import main
from constrained_align.config import ConfigError
from constrained_align.testbed import instance_a
from constrained_align.testbed.bandit import several_constraints_optimum, tv_distance
from constrained_align.testbed.runner import build_tabular

#: A second cost on Instance A's four responses, and a limit that binds beside the first.
SECOND = np.array([[-1.0, -1 / 3, 1 / 3, 1.0]])
SECOND_LIMIT = -0.4


def test_the_exact_optimum_with_a_second_constraint_binds_both():
    bandit = instance_a()
    lams, policy = several_constraints_optimum(bandit, {"second": SECOND}, {"second": SECOND_LIMIT})
    assert lams["cost"] > bandit.lambda_star() > 0 and lams["second"] > 0
    assert bandit.expected(policy, bandit.cost) == pytest.approx(bandit.cost_limit, abs=1e-9)
    assert bandit.expected(policy, SECOND) == pytest.approx(SECOND_LIMIT, abs=1e-9)
    # a slack second limit changes nothing: the one-constraint optimum
    lams, policy = several_constraints_optimum(bandit, {"second": SECOND}, {"second": 1.0})
    assert lams["second"] == 0 and lams["cost"] == pytest.approx(bandit.lambda_star(), rel=1e-9)


def test_grpo_lag_reaches_the_two_constraint_optimum_on_the_testbed():
    bandit = instance_a()
    # Two multipliers moving at once oscillate at the one-constraint step size (0.1): a smaller
    # step and more steps reach the joint fixed point.
    config = load_run_config("grpo_lag:testbed", {"seed": 0, "lambda_lr": 0.02, "steps": 4000})
    train = config.train
    train.beta = bandit.beta
    train.dual.cost_limit = bandit.cost_limit
    train.dual.constraints = {"second": SECOND_LIMIT}
    backend, task = build_tabular(config, bandit)
    scorer = TabularScorer(bandit.reward, bandit.cost, {"second": SECOND})
    result = algorithms.get("grpo_lag").train(train, RunContext(backend, scorer, task, seed=0))
    lams, optimum = several_constraints_optimum(
        bandit, {"second": SECOND}, {"second": SECOND_LIMIT}
    )
    assert tv_distance(backend.policy(), optimum) <= 0.01
    final = result.primal_dual.lambdas
    assert final["cost"] == pytest.approx(lams["cost"], rel=0.02)
    assert final["second"] == pytest.approx(lams["second"], rel=0.02)
    assert {"dual/lambda", "dual/lambda/second", "rollout/cost/second"} <= set(result.history[-1])


def words(prompts, responses, contexts):
    """A cost of one's own: 0.1 per word of the response, minus 0.3 (c > 0 above 3 words)."""
    return [0.1 * len(r.split()) - 0.3 for r in responses]


def test_a_tiny_lm_run_trains_against_a_python_function_as_a_second_constraint(tmp_path):
    sets = [
        "--set",
        'train.dual.constraints={"length": 0.0}',
        "--set",
        'scorers.constraints={"length": "python:tests.testbed.test_several_constraints:words"}',
        "--set",
        "steps=3",
    ]
    out = tmp_path / "run"
    assert main(["train", "grpo_lag:tiny", *sets, "--quiet", "--output-dir", str(out)]) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 3
    for record in records:
        assert {"dual/lambda", "dual/lambda/length", "rollout/cost/length"} <= set(record)
    # the multiplier of the length constraint moved with the (function's) costs it observed
    assert len({r["dual/lambda/length"] for r in records}) > 1


def test_keys_without_several_constraints_refuse_them():
    config = load_run_config(
        "c_dpo:tiny",
        ['train.dual.constraints={"length": 0.0}', 'scorers.constraints={"length": "tiny"}'],
    )
    from constrained_align.runner.build import check_run

    with pytest.raises(ConfigError, match=r"c_dpo trains against one cost; .* grpo_lag"):
        check_run(config)
