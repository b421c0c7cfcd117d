"""Intervals for the figures the library reports: every rate comes with its sample size and a
95 % interval, and a difference is called a result only when its interval excludes zero.

- :func:`wilson`: the Wilson score interval of a proportion k/n (Wilson, 1927; recommended
  over the normal approximation for small n and rates near 0 or 1 by Brown, Cai and DasGupta,
  Statistical Science 2001).
- :func:`balanced_interval`: balanced accuracy (the mean of two recalls), its interval by the
  normal approximation of the sum of two independent binomial variances — each recall's
  variance from its Wilson-centred estimate, so a recall of 0 or 1 does not give width zero.
- :func:`bootstrap_interval`: the seeded percentile bootstrap of a statistic of per-item values
  (Efron and Tibshirani, *An Introduction to the Bootstrap*, 1993, ch. 13): the evaluation's
  means and ratios over prompts.
- :func:`paired_difference`: the mean of ``a − b`` over the same items, with the bootstrap
  interval of the paired differences, called significant only when it excludes 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

Z95 = 1.959963984540054


def wilson(k: float, n: int, z: float = Z95) -> tuple[float, float]:
    """95 % Wilson score interval of ``k`` successes in ``n`` trials; (nan, nan) when n = 0."""
    if n <= 0:
        return float("nan"), float("nan")
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _wilson_variance(k: float, n: int, z: float = Z95) -> float:
    """Binomial variance of k/n with the rate taken at the Wilson centre (never 0)."""
    centre = (k + z * z / 2) / (n + z * z)
    return centre * (1 - centre) / n


def balanced_interval(
    tp: int, positives: int, tn: int, negatives: int, z: float = Z95
) -> tuple[float, float]:
    """95 % interval of (tp/positives + tn/negatives) / 2; (nan, nan) if a class is empty."""
    if positives <= 0 or negatives <= 0:
        return float("nan"), float("nan")
    value = (tp / positives + tn / negatives) / 2
    half = z * math.sqrt(_wilson_variance(tp, positives) + _wilson_variance(tn, negatives)) / 2
    return max(0.0, value - half), min(1.0, value + half)


#: Bootstrap resamples when a caller names none (the percentile ends move by < 0.01 s.d.).
RESAMPLES = 2000


@dataclass(frozen=True)
class Interval:
    """A statistic, its ``level`` percentile-bootstrap interval and the items it rests on."""

    value: float
    low: float
    high: float
    n: int

    @property
    def significant(self) -> bool:
        """The interval excludes 0 (a difference is a result only then)."""
        return self.low > 0 or self.high < 0

    def to_dict(self) -> dict[str, float | int | bool]:
        """The JSON form: value, low, high, n and significant."""
        return {
            "value": self.value,
            "low": self.low,
            "high": self.high,
            "n": self.n,
            "significant": self.significant,
        }


def _row_means(resampled: np.ndarray) -> np.ndarray:
    """``(R,)`` mean of each row of ``(R, n)`` resampled values."""
    return resampled.mean(axis=-1)


def bootstrap_interval(
    values: Sequence[float] | np.ndarray,
    *,
    stat: Callable[[np.ndarray], np.ndarray] = _row_means,
    resamples: int = RESAMPLES,
    seed: int = 0,
    level: float = 0.95,
) -> Interval:
    """``stat`` of ``values`` with its percentile-bootstrap interval.

    ``resamples`` sets of n items are drawn with replacement (one seeded generator, so the same
    values and seed give the same interval) and the interval is the (1 ± level)/2 quantiles of
    the statistic over them. Booleans count as 0/1, so a ratio is the mean of its flags.

    Args:
        values: ``(n,)`` per-item values (one per prompt).
        stat: maps ``(R, n)`` rows of items to ``(R,)`` statistics (default: the mean).
        resamples: R, the number of bootstrap resamples.
        seed: seed of the resampling.
        level: coverage of the interval.

    Returns:
        The :class:`Interval`; value, low and high are NaN when there are no values.
    """
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if x.size == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    rows = np.random.default_rng(seed).integers(0, x.size, size=(resamples, x.size))
    boot = stat(x[rows])  # (R,)
    low, high = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    return Interval(float(stat(x[None, :])[0]), float(low), float(high), int(x.size))


def paired_difference(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    resamples: int = RESAMPLES,
    seed: int = 0,
    level: float = 0.95,
) -> Interval:
    """Mean of ``a − b`` over the same items (``a[i]`` and ``b[i]`` measured on item i), with
    the percentile-bootstrap interval of the mean paired difference: items are resampled
    together, so what the two share (the prompt's difficulty) cancels.

    Raises:
        ValueError: ``a`` and ``b`` differ in length.
    """
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"paired_difference: {x.shape} and {y.shape} items are not paired")
    return bootstrap_interval(x - y, resamples=resamples, seed=seed, level=level)
