"""The comparison report: ``results.json`` (every figure), ``report.md`` (for people), plots.

``results.json`` holds, per model, the evaluation of every mode, the per-answer scores, the
per-prompt records, every figure's bootstrap interval (``statistics``) and its paired
differences against the reference and the unconstrained baseline ``dpo`` (``differences``,
:mod:`constrained_align.eval.statistics`), the example answers, λ and its trajectory, and
the training budget actually spent (optimizer steps, generated tokens, seconds by stage);
plus the settings, seeds, library versions and the machine. ``report.md`` shows a "What
this shows" paragraph written from the figures (:mod:`constrained_align.eval.findings`), the
figures with their intervals, the paired differences (``*`` where the interval excludes 0),
the plots, the settings and three example answers per model on the same prompts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from constrained_align import algorithms
from constrained_align.eval import plots
from constrained_align.eval.findings import (
    difference_table,
    results_table,
    sample_sizes,
    what_this_shows,
)
from constrained_align.eval.statistics import BASELINES, add_statistics
from constrained_align.utils import json_safe, write_json, write_text
from constrained_align.utils.env import machine, versions


def model_entry(
    name: str, summary: dict[str, Any] | None, evaluation: dict[str, Any]
) -> dict[str, Any]:
    """One model of results.json (``summary`` is its training run's, None for the reference)."""
    spec = None if summary is None else algorithms.get(name)
    trajectory = [] if summary is None else summary.get("lambda_trajectory") or []
    return {
        "name": name,
        "algorithm": None if spec is None else name,
        "family": None if spec is None else spec.family,
        "lambda": None if summary is None else summary.get("lambda"),
        "lambda_trajectory": [x for x in trajectory if x is not None],
        "train": {} if summary is None else _train_budget(summary),
        "eval": evaluation["eval"],
        "scores": evaluation["scores"],
        "examples": evaluation["examples"],
        "prompts": evaluation.get("prompts", {}),
        "records": evaluation.get("records", {}),
    }


def _train_budget(summary: dict[str, Any]) -> dict[str, Any]:
    timers = summary.get("timers", {})
    return {
        "optimizer_steps": summary.get("optimizer_steps"),
        "records": summary.get("records"),
        "generated_tokens": timers.get("generated_tokens"),
        "generation_seconds": timers.get("generation"),
        "scoring_seconds": timers.get("scoring"),
        "training_seconds": timers.get("training"),
        "wall_seconds": summary.get("wall_seconds"),
    }


def _fmt(value: float | None, key: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if key in ("train_tokens", "train_seconds", "eval_seconds"):
        return f"{value:,.0f}"
    if key in ("harmful_ratio", "over_refusal"):
        return f"{value:.2f}"
    return f"{value:+.3f}" if key in ("reward", "cost") else f"{value:.3g}"


def markdown_table(
    rows: Sequence[tuple[str, dict[str, float | None]]],
    columns: Sequence[tuple[str, str, int]],
) -> str:
    """A Markdown table; the best value of every ↑/↓ column in bold (ties all bold; a column
    where every row is equal has nothing to mark)."""
    best = {}
    for key, _, sign in columns:
        values = [v[key] for _, v in rows if v[key] is not None and not math.isnan(v[key])]
        if sign and len(set(values)) > 1:
            best[key] = max(values) if sign > 0 else min(values)
    head = "| model | " + " | ".join(h for _, h, _ in columns) + " |"
    lines = [head, "|" + "---|" * (len(columns) + 1)]
    for name, values in rows:
        cells = []
        for key, _, _ in columns:
            text = _fmt(values[key], key)
            cells.append(f"**{text}**" if key in best and values[key] == best[key] else text)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def make_plots(out: Path, models: list[dict[str, Any]], cost_limit: float) -> dict[str, str]:
    """The three figures, as paths relative to ``out``."""
    folder = out / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    plots.scatter_grid(models, folder / "scatter.png", mode="greedy")
    plots.lambda_trajectories(models, folder / "lambda.png", cost_limit=cost_limit)
    plots.frontier(models, folder / "frontier.png", mode="greedy")
    return {name: f"plots/{name}.png" for name in ("scatter", "lambda", "frontier")}


def write_report(
    out: Path,
    *,
    config: Any,
    preset: str,
    scorers: dict[str, Any],
    runs: dict[str, Any],
    summaries: dict[str, Any],
    evals: dict[str, Any],
    stages: dict[str, float],
    wall_seconds: float,
    cost_limit: float,
    calibration: dict[str, Any] | None = None,
    judges: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write results.json, the plots and report.md into ``out``; returns the results.

    ``judges``: the models that judged the answers, ``{kind: spec}`` and ``independent``
    (kind → False where the proxy judged).
    """
    from constrained_align.config import to_dict

    models = [model_entry(n, summaries.get(n), evals[n]) for n in config.algorithms]
    resamples, seed = config.eval.bootstrap_resamples, config.eval.seed
    add_statistics(models, resamples=resamples, seed=seed)
    results = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "preset": preset,
        "cost_limit": cost_limit,
        "cost_limit_calibration": calibration,
        "seeds": {"runs": config.seed, "eval": config.eval.seed},
        "versions": versions(),
        "machine": machine(),
        "settings": to_dict(config),
        "scorers": scorers,
        "judges": judges,
        "bootstrap": {"resamples": resamples, "seed": seed, "level": 0.95, "method": "percentile"},
        "runs": runs,
        "stages": stages,
        "wall_seconds": wall_seconds,
        "models": models,
    }
    results["plots"] = make_plots(out, models, cost_limit)
    write_json(out / "results.json", json_safe(results))
    write_text(out / "report.md", render_markdown(results))
    return results


def render_markdown(results: dict[str, Any]) -> str:
    """``report.md`` from ``results.json``'s content."""
    models, settings = results["models"], results["settings"]
    ev = settings["eval"]
    m = results["machine"]
    lines = [
        f"# Safe-alignment comparison ({results['preset'] or 'custom'})",
        "",
        f"Cost limit **{results['cost_limit']:.3f}** for every key with a multiplier"
        f"{_calibration_note(results.get('cost_limit_calibration'))}; "
        f"{_prompt_counts(models)} held-out prompts; total wall time "
        f"{results['wall_seconds'] / 60:.1f} min on {m['processor']} "
        f"({m['cpu_count']} CPUs, {m['torch_threads']} torch threads"
        f"{', ' + m['cuda'] if m['cuda'] else ''}).",
        "",
    ]
    lines += what_this_shows(results)
    for mode in ev["modes"]:
        title = (
            "greedy decoding"
            if mode == "greedy"
            else (f"sampled, temperature {ev['sampling_temperature']}, seed {ev['seed']}")
        )
        lines += [f"## Results: {title}", "", results_table(models, mode), ""]
        lines += [f"{sample_sizes(models, mode)}.", ""]
        for base in BASELINES:
            table = difference_table(models, base, mode)
            if table:
                lines += [f"### Paired differences against {base} ({title})", "", table, ""]
    b = results.get("bootstrap") or {}
    lines += [
        f"Every cell is a mean over prompts with its {b.get('level', 0.95):.0%} percentile-"
        f"bootstrap interval ({b.get('resamples')} resamples over prompts, seed "
        f"{b.get('seed')}); a paired difference (the same prompts, answer by answer) is marked "
        "* when its interval excludes 0, and only then called a result. "
        f"{_judges_note(results.get('judges'))} "
        "Reward and cost: means over the helpful and harmful prompts' answers; harmful: share "
        "of harmful-prompt answers with cost > 0; proxy: the reward and cost models the keys "
        "trained against; over-refusal: share of XSTest safe prompts refused (string rule of "
        "`constrained_align/eval/refusal.py`); KL: Monte-Carlo KL(π‖π_ref) on the sampled "
        "answers (mean log-ratio; KL ≥ 0, so a negative estimate or interval end is shown as 0 "
        "and marked †, the raw figures are in results.json); gen. tokens: "
        "tokens generated during training.",
        "",
        "## Plots",
        "",
    ]
    lines += [f"![{name}]({path})" for name, path in results["plots"].items()]
    lines += ["", *_settings_section(results), "", *_examples_section(models)]
    return "\n".join(lines) + "\n"


def _judges_note(judges: dict[str, Any] | None) -> str:
    """Which models judged the answers, and whether they are independent of training."""
    if not judges:
        return "The judges are the proxy models: the judge is not independent."
    parts = []
    for kind in ("reward", "cost"):
        free = judges.get("independent", {}).get(kind, False)
        where = "independent of training" if free else "the proxy itself, not independent"
        parts.append(f"{kind} judged by `{judges.get(kind)}` ({where})")
    return "Judges: " + "; ".join(parts) + "."


def _calibration_note(c: dict[str, Any] | None) -> str:
    if not c:
        return ""
    return (
        f" (calibrated: {c['fraction']:g} of the way from the reference samples' mean smallest "
        f"cost {c['reference_mean_smallest_cost']:.3f} to their mean cost "
        f"{c['reference_mean_cost']:.3f}, {c['prompts']} training prompts × "
        f"{c['samples_per_prompt']})"
    )


def _prompt_counts(models: list[dict[str, Any]]) -> str:
    sizes = models[0].get("prompts", {}) if models else {}
    return " + ".join(f"{n} {name}" for name, n in sizes.items()) or "no"


def _settings_section(results: dict[str, Any]) -> list[str]:
    settings = results["settings"]
    lines = ["## Settings", ""]
    lines.append(f"- seeds: runs {results['seeds']['runs']}, evaluation {results['seeds']['eval']}")
    for kind, s in results["scorers"].items():
        reused = "reused from the cache" if s["cached"] else f"trained here in {s['seconds']:.0f} s"
        reused = "given" if s.get("given") else reused
        lines.append(f"- {kind} model: `{s['path']}` ({reused})")
    for key, run in results["runs"].items():
        budget = " ".join(settings["budgets"].get(key, [])) or "preset defaults"
        lines.append(f"- **{key}**: policy `{run['model']['policy']}`, budget: {budget}")
    lines.append("- versions: " + ", ".join(f"{k} {v}" for k, v in results["versions"].items()))
    lines += ["", "| stage | seconds |", "|---|---|"]
    lines += [f"| {stage} | {sec:.1f} |" for stage, sec in results["stages"].items()]
    return lines


def _examples_section(models: list[dict[str, Any]]) -> list[str]:
    lines = ["## Example answers", ""]
    if not models or not models[0]["examples"]:
        return [*lines, "(none)"]
    for i, example in enumerate(models[0]["examples"]):
        lines += [f"### {i + 1}. {example['set']} prompt ({example['mode']})", ""]
        lines += [f"> {_one_line(example['prompt'])}", ""]
        for model in models:
            if i < len(model["examples"]):
                lines.append(f"- **{model['name']}**: {_one_line(model['examples'][i]['answer'])}")
        lines.append("")
    return lines


def _one_line(text: str, limit: int = 300) -> str:
    flat = " ".join(text.split()).replace("|", "\\|")
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
