"""The comparison report's figures with their intervals, the paired differences, and the
"What this shows" paragraph written from them.

Every cell reads ``value [low, high]``: the 95 % percentile-bootstrap interval over prompts
(:mod:`constrained_align.eval.statistics`); a difference is marked ``*`` only when its interval
excludes 0, and the paragraph names only such differences. KL is never shown as a bare
negative number: KL ≥ 0, so a Monte-Carlo estimate or interval end below 0 is shown as 0 and
marked ``†`` (the raw figures stay in ``results.json``).
"""

from __future__ import annotations

import math
from typing import Any

# metric → (table header, words for the paragraph)
HEADERS = {
    "judge_reward": ("judged reward ↑", "judged reward"),
    "judge_cost": ("judged cost ↓", "judged cost"),
    "judge_harmful_ratio": ("judged harmful ↓", "judged harmful ratio"),
    "cost": ("proxy cost", "proxy cost"),
    "harmful_ratio": ("proxy harmful", "proxy harmful ratio"),
    "over_refusal": ("over-refusal ↓", "over-refusal"),
    "kl": ("KL", "KL"),
}
#: The interval columns of the results table, and of the difference tables.
TABLE = ("judge_reward", "judge_cost", "judge_harmful_ratio", "cost", "harmful_ratio")
TABLE_ALL = (*TABLE, "over_refusal", "kl")
#: The differences the paragraph reads.
HEADLINE = ("judge_harmful_ratio", "judge_reward", "over_refusal")
RATIOS = ("judge_harmful_ratio", "harmful_ratio", "over_refusal")
Stat = dict[str, Any]


def _number(x: float, metric: str, signed: bool) -> str:
    digits = 2 if metric in RATIOS else 3
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def fmt_interval(
    stat: Stat | None, metric: str, *, signed: bool = False, mark: bool = False
) -> str:
    """``value [low, high]`` (``*`` after a significant difference when ``mark``); KL's
    negative parts shown as 0 with ``†``; ``—`` for a missing or NaN figure."""
    if not stat or not all(math.isfinite(stat[k]) for k in ("value", "low", "high")):
        return "—"
    value, low, high, dagger = stat["value"], stat["low"], stat["high"], ""
    if metric == "kl" and min(value, low) < 0:
        value, low, high, dagger = max(value, 0.0), max(low, 0.0), max(high, 0.0), "†"
    signed = signed or metric in ("judge_reward", "judge_cost", "cost")
    num = [_number(x, metric, signed) for x in (value, low, high)]
    text = f"{num[0]} [{num[1]}, {num[2]}]{dagger}"
    return text + (" *" if mark and stat.get("significant") else "")


def _plain(value: float | None, digits: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return format(value, digits)


def results_table(models: list[dict[str, Any]], mode: str) -> str:
    """Every model's figures under ``mode`` with their intervals, then λ and its budget."""
    head = [HEADERS[m][0] for m in TABLE_ALL] + ["λ", "gen. tokens", "train s", "eval s"]
    lines = ["| model | " + " | ".join(head) + " |", "|" + "---|" * (len(head) + 1)]
    for model in models:
        stats = model.get("statistics", {}).get(mode, {})
        cells = [fmt_interval(stats.get(m), m) for m in TABLE_ALL]
        cells += [
            _plain(model.get("lambda"), ".3g"),
            _plain(model["train"].get("generated_tokens"), ",.0f"),
            _plain(model["train"].get("wall_seconds"), ",.0f"),
            _plain(sum(m.get("seconds", 0.0) for m in model["eval"].values()), ",.0f"),
        ]
        lines.append(f"| {model['name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def difference_table(models: list[dict[str, Any]], baseline: str, mode: str) -> str | None:
    """Every other model minus ``baseline`` on the same prompts (None when nothing compares)."""
    rows = [m for m in models if baseline in m.get("differences", {})]
    if not rows:
        return None
    columns = (*TABLE, "over_refusal")
    head = [f"Δ {HEADERS[m][1]}" for m in columns]
    lines = ["| model | " + " | ".join(head) + " |", "|" + "---|" * (len(head) + 1)]
    for model in rows:
        diffs = model["differences"][baseline].get(mode, {})
        cells = [fmt_interval(diffs.get(m), m, signed=True, mark=True) for m in columns]
        lines.append(f"| {model['name']} − {baseline} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def sample_sizes(models: list[dict[str, Any]], mode: str) -> str:
    """What the intervals rest on: prompts per figure."""
    stats = models[0].get("statistics", {}).get(mode, {}) if models else {}

    def n(metric: str) -> int:
        return int(stats.get(metric, {}).get("n", 0))

    text = (
        f"n = {n('judge_reward')} answers (helpful + harmful) for reward and cost, "
        f"{n('judge_harmful_ratio')} harmful prompts for the harmful ratios, "
        f"{n('over_refusal')} XSTest-safe prompts for over-refusal"
    )
    return text + (f", {n('kl')} sampled answers for KL" if n("kl") else "")


def _significant(models: list[dict[str, Any]], baseline: str, mode: str) -> list[str]:
    found = []
    for model in models:
        diffs = model.get("differences", {}).get(baseline, {}).get(mode, {})
        for metric in HEADLINE:
            d = diffs.get(metric)
            if d and d.get("significant"):
                word = "higher" if d["value"] > 0 else "lower"
                found.append(
                    f"{model['name']}'s {HEADERS[metric][1]} is {word}, "
                    f"{fmt_interval(d, metric, signed=True)}"
                )
    return found


def _against(models: list[dict[str, Any]], baseline: str, mode: str, label: str) -> str:
    found = _significant(models, baseline, mode)
    words = ", ".join(HEADERS[m][1] for m in HEADLINE)
    if not found:
        return f"No difference from {label} is significant at 95 % ({words})."
    return (
        f"Against {label}, significant at 95 %: " + "; ".join(found) + ". "
        f"No other difference from {label} in {words} excludes 0."
    )


def _over_optimised(models: list[dict[str, Any]], mode: str) -> str | None:
    """Keys whose proxy cost fell significantly below the reference's while the judged cost
    did not."""
    keys = []
    for model in models:
        diffs = model.get("differences", {}).get("reference", {}).get(mode, {})
        proxy, judged = diffs.get("cost"), diffs.get("judge_cost")
        if proxy and judged and proxy["high"] < 0 and not judged["high"] < 0:
            keys.append(model["name"])
    if not keys:
        return None
    return (
        f"{', '.join(keys)} lowered the proxy cost significantly below the reference's without "
        "a significant fall in judged cost: the gain is on the model they trained against only."
    )


def _limit(models: list[dict[str, Any]], mode: str, limit: float) -> str:
    below, above = [], []
    for model in models:
        cost = model.get("statistics", {}).get(mode, {}).get("cost")
        if cost and math.isfinite(cost["low"]):
            if cost["high"] < limit:
                below.append(model["name"])
            elif cost["low"] > limit:
                above.append(model["name"])
    if not below and not above:
        return (
            f"On the held-out prompts every model's mean proxy cost interval contains the cost "
            f"limit {limit:.3f}: none is below or above it with 95 % confidence."
        )
    return (
        f"On the held-out prompts the mean proxy cost lies below the cost limit {limit:.3f} with "
        f"95 % confidence for: {', '.join(below) or 'none'}; above it for: "
        f"{', '.join(above) or 'none'}; the others' intervals contain the limit."
    )


def what_this_shows(results: dict[str, Any]) -> list[str]:
    """The report's "What this shows" section: statements each read off the figures."""
    models, modes = results["models"], results["settings"]["eval"]["modes"]
    if not models or not modes:
        return []
    mode = "sampled" if "sampled" in modes else modes[0]
    names = {m["name"] for m in models}
    sentences = [f"From the {mode} answers ({sample_sizes(models, mode)}):"]
    if "reference" in names:
        sentences.append(_against(models, "reference", mode, "the reference"))
    if "dpo" in names:
        sentences.append(_against(models, "dpo", mode, "the unconstrained baseline dpo"))
    judges = results.get("judges") or {}
    proxies = [k for k, free in (judges.get("independent") or {}).items() if not free]
    if proxies:
        sentences.append(
            f"The {' and '.join(proxies)} judge is the proxy model the keys trained against, "
            "so its figures cannot show over-optimisation of that proxy."
        )
    if "cost" not in proxies and (note := _over_optimised(models, mode)) is not None:
        sentences.append(note)
    sentences.append(_limit(models, mode, results["cost_limit"]))
    return ["## What this shows", "", " ".join(sentences), ""]
