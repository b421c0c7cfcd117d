"""PrimalDual orchestration: cadence, metrics keys, exact solve, resume (ALGORITHMS.md §3.0)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from constrained_align.primal_dual import (
    EMA,
    PID,
    BatchMean,
    Constraint,
    Exact,
    Fixed,
    ImportanceEstimate,
    LogSGD,
    PrimalDual,
    Projected,
    WindowMean,
    build_multiplier,
)


def test_cadence_update_every_and_delay() -> None:
    """Projected lr 1 from 0, cost 1 every step, d = 0 ⇒ e = 1 on every due step.

    update_every 2, delay 3: due steps are those ≥ 3 and even, i.e. 4 and 6 in 0..7,
    so λ = 0,0,0,0,1,1,2,2 after steps 0..7.
    """
    pd = PrimalDual(
        {
            "cost": Constraint(
                rule=Projected(lr=1.0),
                estimator=WindowMean(size=8),
                cost_limit=0.0,
                update_every=2,
                delay_steps=3,
            )
        }
    )
    lams = []
    for step in range(8):
        pd.observe("cost", [1.0])
        lams.append(pd.step(step)["cost"])
    assert lams == [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 2.0, 2.0]
    assert pd.lam() == 2.0


def test_metrics_keys_and_values() -> None:
    """ "cost" keeps the plain keys, other names get a /name suffix; estimate/violation appear
    only after a step computed them. Window (0.5, 1.5) → Ĵ = 1, d = 0.25 ⇒ e = 0.75;
    Projected lr 2 from 0 ⇒ λ = 1.5.
    """
    pd = PrimalDual(
        {
            "cost": Constraint(rule=Projected(lr=2.0), estimator=WindowMean(), cost_limit=0.25),
            "toxicity": Constraint(
                rule=LogSGD(init=1.0, lr=0.1), estimator=BatchMean(), cost_limit=0.0
            ),
        }
    )
    assert pd.metrics() == {"dual/lambda": 0.0, "dual/lambda/toxicity": 1.0}
    pd.observe("cost", np.array([0.5, 1.5]))
    pd.observe("toxicity", [-1.0])
    pd.step(0)
    metrics = pd.metrics()
    assert set(metrics) == {
        "dual/lambda",
        "constraint/cost_estimate",
        "constraint/violation",
        "dual/lambda/toxicity",
        "constraint/cost_estimate/toxicity",
        "constraint/violation/toxicity",
    }
    assert metrics["constraint/cost_estimate"] == 1.0
    assert metrics["constraint/violation"] == 0.75
    assert metrics["dual/lambda"] == 1.5
    assert metrics["constraint/violation/toxicity"] == -1.0
    assert metrics["dual/lambda/toxicity"] == pytest.approx(math.exp(-0.1), abs=1e-15)
    assert pd.lambdas == {"cost": 1.5, "toxicity": metrics["dual/lambda/toxicity"]}


def test_exact_rule_through_violation_fns() -> None:
    """Instance A (§5.3) through PrimalDual: λ* = 1.067480; the recorded violation is taken at
    the starting λ = 0, i.e. C(0) − d = 0.737996 + 0.3 = 1.037996.
    """
    est = ImportanceEstimate(
        np.array([1.0, 0.5, -1.0, -0.5]),
        np.array([1.0, -0.5, -1.0, 0.0]),
        beta=0.5,
        weights=np.array([0.4, 0.2, 0.2, 0.2]),
    )
    pd = PrimalDual({"cost": Constraint(rule=Exact(), estimator=None, cost_limit=-0.3)})
    lams = pd.step(0, {"cost": lambda lam: est(lam) + 0.3})
    assert lams["cost"] == pytest.approx(1.067480, abs=1e-6)
    assert pd.metrics()["constraint/violation"] == pytest.approx(1.037996, abs=1e-6)
    assert pd.metrics()["constraint/cost_estimate"] == pytest.approx(0.737996, abs=1e-6)


def test_errors() -> None:
    pd = PrimalDual({"cost": Constraint(rule=Exact(), estimator=None, cost_limit=0.0)})
    with pytest.raises(ValueError, match="no estimator"):
        pd.observe("cost", [1.0])
    with pytest.raises(ValueError, match="no estimator"):
        pd.step(0)
    with pytest.raises(KeyError, match="unknown"):
        pd.observe("harm", [1.0])
    with pytest.raises(KeyError, match="unknown"):
        pd.step(0, {"harm": lambda lam: 0.0})
    with pytest.raises(ValueError, match="update_every"):
        Constraint(rule=Fixed(value=1.0), estimator=None, cost_limit=0.0, update_every=0)


def make() -> PrimalDual:
    return PrimalDual(
        {
            "cost": Constraint(
                rule=PID(init=0.5, kp=1.0, ki=0.3, kd=2.0, delay=3),
                estimator=WindowMean(size=4),
                cost_limit=0.1,
            ),
            "toxicity": Constraint(
                rule=LogSGD(init=1.0, lr=0.2, max_value=3.0),
                estimator=EMA(momentum=0.7),
                cost_limit=-0.2,
                update_every=2,
                delay_steps=1,
            ),
            "length": Constraint(
                rule=Projected(lr=0.5, max_value=2.0), estimator=BatchMean(), cost_limit=0.0
            ),
        }
    )


def drive(pd: PrimalDual, steps: range) -> list[dict[str, float]]:
    out = []
    for t in steps:
        pd.observe("cost", [math.sin(t), math.cos(0.7 * t)], weights=[1.0, 0.5 + t % 3])
        pd.observe("toxicity", [math.sin(1.3 * t) - 0.1])
        pd.observe("length", [0.3 * math.cos(t), -0.2])
        out.append(pd.step(t) | pd.metrics())
    return out


def test_resume_matches_uninterrupted_run() -> None:
    """20 steps straight vs 10 steps, JSON save, load into fresh objects, 10 more: identical
    λ and metrics (PID integral/EMAs/deque, the cost window and the EMA all restored).
    """
    straight = drive(make(), range(20))

    first = make()
    head = drive(first, range(10))
    saved = json.loads(json.dumps(first.state_dict()))
    resumed = make()
    resumed.load_state_dict(saved)
    assert resumed.metrics() == first.metrics()
    assert head + drive(resumed, range(10, 20)) == straight


def test_load_rejects_other_constraint_names() -> None:
    pd = make()
    other = PrimalDual(
        {"cost": Constraint(rule=Projected(lr=0.1), estimator=WindowMean(), cost_limit=0.0)}
    )
    with pytest.raises(ValueError, match="do not match"):
        other.load_state_dict(pd.state_dict())


def test_build_multiplier() -> None:
    kw = dict(init=0.5, lr=0.1, max_value=4.0)
    log_sgd = build_multiplier("log_sgd", **kw)
    assert isinstance(log_sgd, LogSGD) and log_sgd.value == pytest.approx(0.5, abs=1e-15)
    assert isinstance(build_multiplier("projected", **kw), Projected)
    pid = build_multiplier("pid", init=0.5, lr=0.1, max_value=None, kp=2.0, delay=4)
    assert isinstance(pid, PID) and (pid.kp, pid.delay, pid.max_value) == (2.0, 4, 100.0)
    fixed = build_multiplier("fixed", **kw)
    assert isinstance(fixed, Fixed) and fixed.value == 0.5
    exact = build_multiplier("exact", **kw)
    assert isinstance(exact, Exact) and exact.max_value == 4.0
    with pytest.raises(ValueError, match="log_sgd, projected, pid, fixed, exact"):
        build_multiplier("adam", **kw)
