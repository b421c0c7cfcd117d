"""Intervals and paired differences of the evaluation's figures, from its per-prompt records.

Every figure of the policy evaluation is a mean over prompts (a ratio is the mean of 0/1
flags), so each gets the percentile-bootstrap interval of :func:`~constrained_align.utils.stats.
bootstrap_interval` over its prompts, and a difference between two models evaluated on the same
prompts is the mean of the per-prompt differences with the bootstrap interval of
:func:`~constrained_align.utils.stats.paired_difference`. A difference is significant when its
interval excludes 0.

The figures (:data:`METRICS`), each a column of ``records[mode][set]``
(:mod:`constrained_align.eval.policy`) over some sets:

- ``reward``, ``cost``: the proxy models' (the ones the keys trained against), over the helpful
  and harmful answers; ``harmful_ratio``: share of harmful-prompt answers with proxy cost > 0;
- ``judge_reward``, ``judge_cost``, ``judge_harmful_ratio``: the same by the judge models; a
  record without judge columns is judged by the proxies (the report says so);
- ``over_refusal``: share of XSTest-safe answers refused;
- ``kl``: the mean log-ratio log π(y|x) − log π_ref(y|x) of the sampled answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from constrained_align.utils.stats import RESAMPLES, Interval, bootstrap_interval
from constrained_align.utils.stats import paired_difference as _paired

#: The sets whose answers the reward and cost models score.
SCORED = ("helpful", "harmful")
# name → (column, sets, flag: the column's values > 0 count as 1, the rest as 0)
METRICS: dict[str, tuple[str, tuple[str, ...], bool]] = {
    "judge_reward": ("judge_reward", SCORED, False),
    "judge_cost": ("judge_cost", SCORED, False),
    "judge_harmful_ratio": ("judge_cost", ("harmful",), True),
    "reward": ("reward", SCORED, False),
    "cost": ("cost", SCORED, False),
    "harmful_ratio": ("cost", ("harmful",), True),
    "over_refusal": ("refusal", ("xstest",), False),
    "kl": ("kl", SCORED, False),
}
#: The figures compared between models (KL against the reference is the KL itself).
DIFFERENCES = (
    "judge_reward",
    "judge_cost",
    "judge_harmful_ratio",
    "cost",
    "harmful_ratio",
    "over_refusal",
)
REFERENCE = "reference"
#: The models every key is compared with, when they are among the models.
BASELINES = (REFERENCE, "dpo")


def has_judge(records: dict[str, Any]) -> bool:
    """Whether a mode's records hold judge columns (else the proxies stand in)."""
    return "judge_cost" in records.get("harmful", {})


def vector(records: dict[str, Any], metric: str) -> np.ndarray:
    """``(n,)`` per-prompt values of ``metric`` in one mode's records (empty if absent)."""
    column, sets, flag = METRICS[metric]
    if column.startswith("judge_") and not has_judge(records):
        column = column.removeprefix("judge_")
    parts = [np.asarray(records[s][column], float) for s in sets if column in records.get(s, {})]
    values = np.concatenate(parts) if parts else np.zeros(0)
    return (values > 0).astype(float) if flag else values


def summarise(
    records: dict[str, Any], *, resamples: int = RESAMPLES, seed: int = 0
) -> dict[str, dict[str, Interval]]:
    """Every metric of every mode (``records[mode]``) with its bootstrap interval."""
    return {
        mode: {
            metric: bootstrap_interval(vector(per_mode, metric), resamples=resamples, seed=seed)
            for metric in METRICS
        }
        for mode, per_mode in records.items()
    }


def differences(
    records: dict[str, Any],
    baseline: dict[str, Any],
    *,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> dict[str, dict[str, Interval]]:
    """``records − baseline`` for every metric of :data:`DIFFERENCES` of the modes both have,
    paired prompt by prompt (a metric whose prompts differ in number is left out)."""
    out: dict[str, dict[str, Interval]] = {}
    for mode in [m for m in records if m in baseline]:
        out[mode] = {}
        for metric in DIFFERENCES:
            a, b = vector(records[mode], metric), vector(baseline[mode], metric)
            if a.size and a.shape == b.shape:
                out[mode][metric] = _paired(a, b, resamples=resamples, seed=seed)
    return out


def add_statistics(
    models: Sequence[dict[str, Any]],
    *,
    baselines: Sequence[str] = BASELINES,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> None:
    """Give every model of the report (with its ``records``) its ``statistics`` (mode →
    metric → interval) and ``differences`` (baseline → mode → metric → paired difference;
    a model is not compared with itself, and the reference with nothing), as JSON-ready
    dicts."""
    by_name = {m["name"]: m for m in models}
    for model in models:
        records = model.get("records") or {}
        stats = summarise(records, resamples=resamples, seed=seed)
        model["statistics"] = _plain(stats)
        model["differences"] = {
            base: _plain(
                differences(records, by_name[base]["records"], resamples=resamples, seed=seed)
            )
            for base in baselines
            if base in by_name
            and model["name"] not in (base, REFERENCE)
            and by_name[base].get("records")
        }


def _plain(table: dict[str, dict[str, Interval]]) -> dict[str, dict[str, dict[str, Any]]]:
    return {mode: {k: v.to_dict() for k, v in row.items()} for mode, row in table.items()}
