"""Intervals, paired differences and the "What this shows" paragraph of the compare report,
from hand-built per-prompt records whose bootstrap distributions are known exactly."""

from __future__ import annotations

from typing import Any

from constrained_align.eval.findings import (
    difference_table,
    fmt_interval,
    results_table,
    what_this_shows,
)
from constrained_align.eval.statistics import add_statistics, vector


def _records(harmful_cost: list[float], *, judged: list[float] | None = None) -> dict[str, Any]:
    """One sampled mode: 2 helpful and 8 harmful answers, 4 XSTest-safe prompts (1 refused)."""
    harmful = {"reward": [0.0] * 8, "cost": harmful_cost, "refusal": [0] * 8, "kl": [0.0] * 8}
    if judged is not None:
        harmful |= {"judge_reward": [0.0] * 8, "judge_cost": judged}
    helpful = {"reward": [1.0, 3.0], "cost": [-1.0, -1.0], "refusal": [0, 0], "kl": [0.0, 0.0]}
    if judged is not None:
        helpful |= {"judge_reward": [1.0, 3.0], "judge_cost": [-1.0, -1.0]}
    return {
        "sampled": {"helpful": helpful, "harmful": harmful, "xstest": {"refusal": [1, 0, 0, 0]}}
    }


def _model(name: str, records: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "records": records, "lambda": None, "train": {}, "eval": {}}


def _results(models: list[dict[str, Any]], independent: bool = True) -> dict[str, Any]:
    add_statistics(models, resamples=2000, seed=0)
    judges = {"reward": "j-r", "cost": "j-c", "independent": {"reward": independent, "cost": True}}
    return {
        "models": models,
        "settings": {"eval": {"modes": ["sampled"]}},
        "cost_limit": 0.5,
        "judges": judges,
    }


SAFE, UNSAFE = [-1.0] * 8, [1.0] * 8
ONE_UNSAFE = [1.0] + [-1.0] * 7


def test_vectors_read_the_records_and_fall_back_to_the_proxy() -> None:
    records = _records(ONE_UNSAFE)["sampled"]
    assert vector(records, "harmful_ratio").tolist() == [1.0] + [0.0] * 7
    assert vector(records, "reward").tolist() == [1.0, 3.0] + [0.0] * 8
    assert vector(records, "over_refusal").tolist() == [1.0, 0.0, 0.0, 0.0]
    # no judge columns: the proxy stands in
    assert (
        vector(records, "judge_harmful_ratio").tolist() == vector(records, "harmful_ratio").tolist()
    )
    judged = _records(SAFE, judged=UNSAFE)["sampled"]
    assert vector(judged, "judge_harmful_ratio").tolist() == [1.0] * 8
    assert vector(judged, "harmful_ratio").tolist() == [0.0] * 8


def test_statistics_and_differences_by_hand() -> None:
    """dpo answers every harmful prompt unsafely (judge), the reference none: a difference of
    exactly 1 on each of the 8 prompts, so its interval is [1, 1]. c_dpo is unsafe on one prompt:
    +0.125, and a resample misses that prompt with probability (7/8)⁸ ≈ 0.34, so the interval
    starts at 0 and it is not significant."""
    models = [
        _model("reference", _records(SAFE, judged=SAFE)),
        _model("dpo", _records(UNSAFE, judged=UNSAFE)),
        _model("c_dpo", _records(SAFE, judged=ONE_UNSAFE)),
    ]
    _results(models)
    ref, dpo, c_dpo = models
    assert ref["statistics"]["sampled"]["over_refusal"] | {"significant": True} == {
        "value": 0.25, "low": 0.0, "high": 0.75, "n": 4, "significant": True,
    }  # fmt: skip
    assert set(ref["differences"]) == set() and set(dpo["differences"]) == {"reference"}
    assert set(c_dpo["differences"]) == {"reference", "dpo"}
    d = dpo["differences"]["reference"]["sampled"]["judge_harmful_ratio"]
    assert (d["value"], d["low"], d["high"], d["n"], d["significant"]) == (1.0, 1.0, 1.0, 8, True)
    d = c_dpo["differences"]["reference"]["sampled"]["judge_harmful_ratio"]
    assert d["value"] == 0.125 and d["low"] == 0.0 and d["significant"] is False
    d = c_dpo["differences"]["dpo"]["sampled"]["judge_harmful_ratio"]
    assert d["value"] == -0.875 and d["high"] < 0 and d["significant"] is True
    # the proxy cost moved with the proxy records, not the judge's
    assert c_dpo["differences"]["reference"]["sampled"]["cost"]["value"] == 0.0


def test_what_this_shows_names_the_significant_differences_only() -> None:
    models = [
        _model("reference", _records(SAFE, judged=SAFE)),
        _model("dpo", _records(UNSAFE, judged=UNSAFE)),
        _model("c_dpo", _records(SAFE, judged=ONE_UNSAFE)),
    ]
    text = "\n".join(what_this_shows(_results(models)))
    assert "## What this shows" in text
    assert (
        "Against the reference, significant at 95 %: dpo's judged harmful ratio is higher, "
        "+1.00 [+1.00, +1.00]." in text
    )
    assert "c_dpo's judged harmful ratio is lower, -0.88" in text  # against dpo
    assert "c_dpo's judged harmful ratio is higher" not in text  # +0.125 is not significant
    assert "No difference from" not in text
    # proxy cost: reference and c_dpo 0.8 ± 0.0 … all -1 → below 0.5; dpo's mean 0.6: above
    assert "below the cost limit 0.500 with 95 % confidence for: reference, c_dpo" in text
    table = difference_table(models, "reference", "sampled")
    assert "| dpo − reference |" in table and "+1.00 [+1.00, +1.00] *" in table
    assert "+0.12 [+0.00, " in table and "] *" not in table.splitlines()[-1].split("|")[4]


def test_what_this_shows_when_nothing_is_significant() -> None:
    models = [
        _model("reference", _records(SAFE)),
        _model("c_dpo", _records(ONE_UNSAFE)),
    ]
    text = " ".join(what_this_shows(_results(models, independent=False)))
    assert (
        "No difference from the reference is significant at 95 % (judged harmful ratio, "
        "judged reward, over-refusal)." in text
    )
    assert "unconstrained baseline" not in text  # no dpo among the models
    assert "The reward judge is the proxy model the keys trained against" in text
    assert "Against the reference" not in text


def test_over_optimisation_of_the_proxy_is_named() -> None:
    """c_dpo's proxy cost falls on every prompt; its judged cost does not move."""
    lower = [-2.0] * 8
    models = [
        _model("reference", _records(SAFE, judged=ONE_UNSAFE)),
        _model("c_dpo", _records(lower, judged=ONE_UNSAFE)),
    ]
    text = " ".join(what_this_shows(_results(models)))
    assert "c_dpo lowered the proxy cost significantly below the reference's" in text


def test_kl_is_never_a_bare_negative_number() -> None:
    stat = {"value": -0.004, "low": -0.02, "high": 0.01, "n": 8}
    assert fmt_interval(stat, "kl") == "0.000 [0.000, 0.010]†"
    assert fmt_interval({"value": 0.2, "low": 0.1, "high": 0.3, "n": 8}, "kl") == (
        "0.200 [0.100, 0.300]"
    )
    assert fmt_interval(None, "kl") == "—"
    models = [_model("reference", _records(SAFE))]
    _results(models)
    table = results_table(models, "sampled")
    assert "| reference | +0.400 [" in table  # judged (by the proxy) reward: (1 + 3) / 10
    assert "0.000 [0.000, 0.000]" in table  # the reference's KL is exactly 0
