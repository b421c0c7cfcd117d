"""Closed-form checks of the multiplier rules (constrained_align.primal_dual.multipliers)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import pytest

from constrained_align.primal_dual import (
    PID,
    DualUnboundedError,
    Exact,
    Fixed,
    LogSGD,
    MultiplierRule,
    Projected,
)


def run(rule: MultiplierRule, violations: list[float]) -> list[float]:
    return [rule.update(e) for e in violations]


def test_log_sgd_trajectory() -> None:
    """Safe RLHF Eq. 31, init 1, lr 0.1, e = (1, 1, −2).

    φ0 = log 1 = 0, λ0 = 1.
    φ1 = 0 + 0.1·1·1 = 0.1,                          λ1 = e^0.1 = 1.1051709
    φ2 = 0.1 + 0.1·1.1051709·1 = 0.21051709,         λ2 = e^0.21051709 = 1.2343161
    φ3 = 0.21051709 + 0.1·1.2343161·(−2) = −0.03634614, λ3 = e^−0.03634614 = 0.9643065
    """
    rule = LogSGD(init=1.0, lr=0.1)
    lams = run(rule, [1.0, 1.0, -2.0])
    assert lams == pytest.approx([1.1051709, 1.2343161, 0.9643065], abs=1e-6)
    assert rule.log_value == pytest.approx(-0.03634614, abs=1e-7)


def test_log_sgd_clamps_at_max_and_stays_positive() -> None:
    """max_value 1.2: φ2 = 0.2105 > log 1.2 = 0.18232, so λ2 = 1.2 exactly.

    Then e = −1: φ3 = log 1.2 − 0.1·1.2 = 0.06232, λ3 = 1.2·e^−0.12 = 1.0643045.
    A huge negative violation only shrinks λ multiplicatively: λ > 0 always.
    """
    rule = LogSGD(init=1.0, lr=0.1, max_value=1.2)
    assert run(rule, [1.0, 1.0]) == pytest.approx([1.1051709, 1.2], abs=1e-7)
    assert rule.value == pytest.approx(1.2, rel=1e-15)
    assert rule.update(-1.0) == pytest.approx(1.0643045, abs=1e-7)
    assert rule.update(-1000.0) > 0.0


def test_log_sgd_rejects_zero_init() -> None:
    """λ = exp(φ) can never be 0, so init = 0 is refused."""
    with pytest.raises(ValueError, match="init > 0"):
        LogSGD(init=0.0)


def test_projected_trajectory_and_clamps() -> None:
    """λ ← clip(λ + 0.5·e, 0, 2) from 0 with e = (1, −3, 2, 10).

    0 + 0.5 = 0.5; 0.5 − 1.5 = −1 → 0; 0 + 1 = 1; 1 + 5 = 6 → 2.
    """
    rule = Projected(init=0.0, lr=0.5, max_value=2.0)
    assert run(rule, [1.0, -3.0, 2.0, 10.0]) == [0.5, 0.0, 1.0, 2.0]


PID_KW = dict(init=0.1, kp=1.0, ki=0.5, kd=2.0, delay=2, alpha_p=0.5, alpha_d=0.5)


def test_pid_pieces() -> None:
    """kp 1, ki 0.5, kd 2, delay 2, α_p = α_d = 0.5, init 0.1, e = (1, 1, 1, −3, −3).

    t1: I = 0.1 + 0.5 = 0.6; P = D = 0.5; history [] (< 2) → deriv 0; λ = 0.5 + 0.6 = 1.1
    t2: I = 1.1; P = D = 0.75; history [0.5] → deriv 0; λ = 0.75 + 1.1 = 1.85
    t3: I = 1.6; P = D = 0.875; history [0.5, 0.75] → deriv 0.875 − 0.5 = 0.375;
        λ = 0.875 + 1.6 + 2·0.375 = 3.225
    t4: I = max(0, 1.6 − 1.5) = 0.1; P = D = 0.4375 − 1.5 = −1.0625; ref 0.75 → deriv 0;
        λ = −1.0625 + 0.1 = −0.9625 → 0
    t5: I = max(0, 0.1 − 1.5) = 0; P = −0.53125 − 1.5 = −2.03125; λ → 0
    """
    rule = PID(**PID_KW)
    assert rule.value == 0.1
    lams = run(rule, [1.0, 1.0, 1.0, -3.0, -3.0])
    assert lams == pytest.approx([1.1, 1.85, 3.225, 0.0, 0.0], abs=1e-12)
    assert rule.integral == 0.0
    assert rule.p_ema == pytest.approx(-2.03125, abs=1e-12)
    assert list(rule.history) == pytest.approx([-1.0625, -2.03125], abs=1e-12)


def test_pid_clamps_at_max_value() -> None:
    """Same gains with max_value 2: t2 = 1.85 < 2, t3 = 3.225 → 2."""
    rule = PID(**PID_KW, max_value=2.0)
    assert run(rule, [1.0, 1.0, 1.0]) == pytest.approx([1.1, 1.85, 2.0], abs=1e-12)


def test_pid_integral_only_is_projected_ascent() -> None:
    """kp = kd = 0: λ = I = max(0, I + ki·e), i.e. Projected with lr = ki from init."""
    pid = PID(init=0.3, kp=0.0, ki=0.2, kd=0.0)
    proj = Projected(init=0.3, lr=0.2)
    es = [1.0, -0.5, -4.0, 2.0, 0.25]
    assert run(pid, es) == pytest.approx(run(proj, es), abs=1e-15)


def test_fixed_never_moves() -> None:
    rule = Fixed(value=0.7)
    assert run(rule, [5.0, -5.0]) == [0.7, 0.7]
    assert rule.update(lambda lam: 1.0) == 0.7


RULES: dict[str, Callable[[], MultiplierRule]] = {
    "log_sgd": lambda: LogSGD(init=1.0, lr=0.1),
    "projected": lambda: Projected(init=0.5, lr=0.1),
    "pid": lambda: PID(),
}


@pytest.mark.parametrize("name", sorted(RULES))
def test_sign_positive_violation_raises_lambda(name: str) -> None:
    """e > 0 (constraint violated) must push λ up; e < 0 must not."""
    up, down = RULES[name](), RULES[name]()
    start = up.value
    assert up.update(1.0) > start
    assert down.update(-1.0) <= start


@pytest.mark.parametrize("name", sorted(RULES))
def test_callable_violation_is_evaluated_at_current_lambda(name: str) -> None:
    """A non-exact rule given λ ↦ e(λ) behaves as if given e(current λ)."""
    with_fn, with_float = RULES[name](), RULES[name]()
    seen: list[float] = []

    def fn(lam: float) -> float:
        seen.append(lam)
        return 2.0 - lam

    start = with_fn.value
    assert with_fn.update(fn) == with_float.update(2.0 - start)
    assert seen == [start]


def test_exact_sign() -> None:
    """e(λ) = 1 − λ: violated at λ = 0, so λ rises to the root 1."""
    assert Exact().update(lambda lam: 1.0 - lam) == pytest.approx(1.0, abs=1e-10)


def test_exact_sigmoid_root() -> None:
    """Two responses, r = (1, 0), c = (1, −1), β = 0.5, uniform weights, d = −0.5.

    π_λ(1) = σ((r1 − r2 − λ(c1 − c2))/β) = σ((1 − 2λ)/0.5), so
    C(λ) = π(1) − π(2) = 2σ(·) − 1 = tanh((1 − 2λ)/(2β)) = tanh(1 − 2λ).
    C(λ) = −0.5 ⇒ 1 − 2λ = −atanh(0.5) ⇒ λ* = (1 + atanh 0.5)/2 = 0.77465307.
    """

    def violation(lam: float) -> float:
        p1 = 1.0 / (1.0 + math.exp(-(1.0 - 2.0 * lam) / 0.5))
        return (2.0 * p1 - 1.0) - (-0.5)

    assert Exact().update(violation) == pytest.approx(0.77465307, abs=1e-8)


def test_exact_zero_when_satisfied_and_roots_on_bracket() -> None:
    """e(0) ≤ 0 ⇒ λ = 0; e = 2 − λ hits 0 exactly at the bracket point 2; e = 3 − λ needs Brent."""
    assert Exact().update(lambda lam: -1.0 - lam) == 0.0
    assert Exact().update(lambda lam: 2.0 - lam) == 2.0
    assert Exact().update(lambda lam: 3.0 - lam) == pytest.approx(3.0, abs=1e-10)


def test_exact_needs_a_function() -> None:
    with pytest.raises(TypeError, match="needs a function"):
        Exact().update(0.5)


def test_exact_unbounded() -> None:
    """e(λ) = 1 + e^−λ > 0 for every λ: no finite root."""
    with pytest.raises(DualUnboundedError, match="no finite minimiser"):
        Exact().update(lambda lam: 1.0 + math.exp(-lam))


def test_exact_root_above_max_value() -> None:
    """e = 5 − λ has its root at 5 > max_value 2: refused, not clipped."""
    with pytest.raises(DualUnboundedError, match="max_value"):
        Exact(max_value=2.0).update(lambda lam: 5.0 - lam)
    assert Exact(max_value=8.0).update(lambda lam: 5.0 - lam) == pytest.approx(5.0, abs=1e-10)


ALL_RULES: dict[str, Callable[[], MultiplierRule]] = {
    **RULES,
    "pid_short": lambda: PID(**PID_KW),
    "fixed": lambda: Fixed(value=0.3),
    "log_sgd_max": lambda: LogSGD(init=0.5, lr=0.3, max_value=1.5),
}


@pytest.mark.parametrize("name", sorted(ALL_RULES))
def test_state_dict_round_trip_through_json(name: str) -> None:
    """Run 7 steps, save (via JSON), load into a fresh rule, run 7 more: bit-identical to 14."""
    es = [0.3, 1.2, -0.7, 2.5, 0.1, -1.9, 0.8, 0.4, -0.2, 1.1, -3.0, 0.6, 0.05, 1.7]
    straight = ALL_RULES[name]()
    expected = run(straight, es)

    first = ALL_RULES[name]()
    head = run(first, es[:7])
    resumed = ALL_RULES[name]()
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    assert resumed.value == first.value
    assert head + run(resumed, es[7:]) == expected


def test_load_state_dict_rejects_other_rule() -> None:
    with pytest.raises(ValueError, match="log_sgd"):
        Projected(lr=0.1).load_state_dict(LogSGD().state_dict())


def test_exact_state_round_trip() -> None:
    rule = Exact()
    rule.update(lambda lam: 1.5 - lam)
    other = Exact()
    other.load_state_dict(json.loads(json.dumps(rule.state_dict())))
    assert other.value == rule.value


def test_non_finite_violation_rejected() -> None:
    with pytest.raises(ValueError, match="finite"):
        Projected(lr=0.1).update(float("nan"))
