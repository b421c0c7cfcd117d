"""Intervals checked against values worked out by hand (Wilson 1927; Brown, Cai and DasGupta
2001, table values) and against their defining properties; the bootstrap by cases whose
resampling distribution is known exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest

from constrained_align.utils.stats import (
    Z95,
    balanced_interval,
    bootstrap_interval,
    paired_difference,
    wilson,
)


def test_wilson_by_hand() -> None:
    # p = 0.81, n = 100: centre (p + z²/2n)/(1 + z²/n), half z·√(p(1−p)/n + z²/4n²)/(1 + z²/n)
    z2 = Z95**2
    denom = 1 + z2 / 100
    centre = (0.81 + z2 / 200) / denom
    half = Z95 * math.sqrt(0.81 * 0.19 / 100 + z2 / 40000) / denom
    assert wilson(81, 100) == pytest.approx((centre - half, centre + half))
    assert wilson(81, 100) == pytest.approx((0.7222, 0.8749), abs=1e-4)
    # 0 of 10: the lower end is 0 and the upper z²/(n + z²).
    assert wilson(0, 10) == pytest.approx((0.0, z2 / (10 + z2)))
    assert all(math.isnan(v) for v in wilson(0, 0))


def test_balanced_interval_contains_its_value_and_narrows_with_n() -> None:
    lo, hi = balanced_interval(8, 10, 80, 90)
    value = (0.8 + 80 / 90) / 2
    assert lo < value < hi
    lo_big, hi_big = balanced_interval(80, 100, 800, 900)
    assert hi_big - lo_big < (hi - lo) / 2
    # Perfect recalls still leave an interval of positive width.
    lo_p, hi_p = balanced_interval(10, 10, 10, 10)
    assert lo_p < 1.0 == hi_p
    assert all(math.isnan(v) for v in balanced_interval(0, 0, 5, 5))


def test_bootstrap_interval_of_constant_values_is_a_point() -> None:
    interval = bootstrap_interval([0.3] * 7)
    assert (interval.value, interval.low, interval.high, interval.n) == pytest.approx(
        (0.3, 0.3, 0.3, 7)
    )
    assert all(math.isnan(v) for v in (bootstrap_interval([]).value, bootstrap_interval([]).low))


def test_bootstrap_interval_of_two_values_spans_both() -> None:
    """Resampled means of {0, 1} are 0, ½, 1 with probabilities ¼, ½, ¼: the 2.5 % and 97.5 %
    quantiles are the extremes."""
    interval = bootstrap_interval([0.0, 1.0], resamples=2000, seed=3)
    assert (interval.value, interval.low, interval.high) == (0.5, 0.0, 1.0)


def test_bootstrap_interval_is_seeded_and_inside_the_range() -> None:
    values = np.random.default_rng(0).normal(2.0, 1.0, 50)
    a, b = bootstrap_interval(values, seed=5), bootstrap_interval(values, seed=5)
    assert a == b
    assert values.min() <= a.low < a.value < a.high <= values.max()
    assert a.value == pytest.approx(values.mean())


def test_bootstrap_interval_matches_the_normal_interval_for_a_large_sample() -> None:
    """For n = 2000 the bootstrap mean is nearly normal: half-width ≈ z·s/√n."""
    values = np.random.default_rng(1).normal(0.0, 1.0, 2000)
    interval = bootstrap_interval(values)
    half = Z95 * values.std(ddof=1) / math.sqrt(values.size)
    assert (interval.high - interval.low) / 2 == pytest.approx(half, rel=0.1)


def test_bootstrap_interval_takes_another_statistic() -> None:
    interval = bootstrap_interval([1.0, 2.0, 100.0], stat=lambda rows: np.median(rows, axis=-1))
    assert interval.value == 2.0 and interval.low == 1.0 and interval.high == 100.0


def test_paired_difference_by_hand() -> None:
    """A shift shared by every item is its own interval; equal values are no difference; one
    difference of 2 in 4 items has resampled means 0 with probability (½)⁴ > 2.5 %, so its
    interval reaches 0 and it is not significant."""
    base = np.random.default_rng(2).normal(0.0, 5.0, 12)
    shifted = paired_difference(base + 0.3, base)
    assert (shifted.value, shifted.low, shifted.high) == pytest.approx((0.3, 0.3, 0.3))
    assert shifted.significant and shifted.to_dict()["significant"] is True
    same = paired_difference(base, base)
    assert (same.value, same.low, same.high, same.significant) == (0.0, 0.0, 0.0, False)
    two = paired_difference([1, 1, 0, 0], [0, 0, 0, 0])
    assert (two.value, two.low, two.high, two.significant) == (0.5, 0.0, 1.0, False)
    positive = paired_difference([0.4, 0.5, 0.9], [0.3, 0.3, 0.6])
    assert positive.significant and positive.low >= 0.1 - 1e-12


def test_pairing_removes_what_the_items_share() -> None:
    """A per-item offset (the prompt's difficulty) dwarfs the effect; paired, the effect shows."""
    rng = np.random.default_rng(4)
    offset = rng.normal(0.0, 10.0, 30)
    b = offset + rng.normal(0.0, 0.1, 30)
    a = offset + 0.5 + rng.normal(0.0, 0.1, 30)
    assert paired_difference(a, b).significant
    unpaired_a, unpaired_b = bootstrap_interval(a), bootstrap_interval(b)
    assert unpaired_a.low < unpaired_b.high  # the two means' intervals overlap
    with pytest.raises(ValueError, match="not paired"):
        paired_difference([1.0, 2.0], [1.0])
