"""``constrained-align eval-scorer``: score held-out rows, write results.json and the scatter.

Metrics are reported overall and per ``source`` of the canonical rows (HH-RLHF helpful-base,
harmless-base, XSTest...), because the sources measure different things: HH-RLHF pairs test
ranking, XSTest's human labels test the C = 0 boundary.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from constrained_align.data import harmlessness_pairs, helpfulness_pairs, labelled_responses
from constrained_align.data.schema import iter_rows
from constrained_align.scoring import TextScorer
from constrained_align.scoring.metrics import (
    classification_metrics,
    evaluate_cost,
    evaluate_reward,
    scatter_plot,
)
from constrained_align.utils import write_json
from constrained_align.utils.env import versions


def _by_source(rows: Any) -> dict[str, Any]:
    column = list(rows["source"]) if len(rows) else []
    return {
        s: rows.select([i for i, v in enumerate(column) if v == s]) for s in sorted(set(column))
    }


def _responses(rows: Any) -> tuple[list[str], list[Any], list[str], list[bool | None]]:
    """Every distinct (context, prompt, response) of the rows with its safety label."""
    seen: dict[tuple[str, str, str], int] = {}
    prompts: list[str] = []
    contexts: list[Any] = []
    responses: list[str] = []
    labels: list[bool | None] = []
    for row in iter_rows(rows):
        for i in (0, 1):
            key = (repr(row["context"]), row["prompt"], row[f"response_{i}"])
            if key in seen:
                continue
            seen[key] = len(responses)
            prompts.append(row["prompt"])
            contexts.append(row["context"])
            responses.append(row[f"response_{i}"])
            labels.append(row[f"is_response_{i}_safe"])
    return prompts, contexts, responses, labels


def evaluate_scorers(
    rows: Any,
    output_dir: str | Path,
    *,
    reward: TextScorer | None = None,
    cost: TextScorer | None = None,
    extra_labelled: dict[str, Any] | None = None,
    data_name: str = "",
) -> dict[str, Any]:
    """Evaluate a reward and/or a cost model on canonical rows; write results and the scatter.

    Args:
        rows: canonical rows (held out from training).
        output_dir: where ``results.json`` and ``scatter.png`` go.
        reward: the reward model, or None.
        cost: the cost model, or None.
        extra_labelled: more labelled-response sets (name → ``labelled_responses`` view) for the
            cost model's safety classification, e.g. all XSTest models' completions.
        data_name: how the rows were chosen, recorded in the results.

    Returns:
        The results also written to ``results.json``.
    """
    if reward is None and cost is None:
        raise ValueError("give a reward model, a cost model, or both")
    start = time.perf_counter()
    out = Path(output_dir)
    groups = {"all": rows, **_by_source(rows)}
    results: dict[str, Any] = {"data": {"name": data_name, "rows": len(rows)}}
    results["data"]["rows_by_source"] = {k: len(v) for k, v in groups.items() if k != "all"}
    if reward is not None:
        section: dict[str, Any] = {"model": str(reward.path or "")}
        for name, group in groups.items():
            pairs = helpfulness_pairs(group)
            if len(pairs):
                section[name] = evaluate_reward(reward, pairs)
        results["reward"] = section
    if cost is not None:
        section = {"model": str(cost.path or "")}
        for name, group in groups.items():
            pairs, labelled = harmlessness_pairs(group), labelled_responses(group)
            if any(pairs["ranked"]) or len(labelled):
                section[name] = evaluate_cost(cost, pairs, labelled)
        for name, labelled in (extra_labelled or {}).items():
            scores = cost.score(
                labelled["prompt"], labelled["response"], labelled["context"], desc=name
            )
            unsafe = [not s for s in labelled["is_safe"]]
            section[name] = {"classification": classification_metrics(scores, unsafe)}
        results["cost"] = section
    if reward is not None and cost is not None:
        prompts, contexts, responses, labels = _responses(rows)
        r = reward.score(prompts, responses, contexts, desc="scatter: reward")
        c = cost.score(prompts, responses, contexts, desc="scatter: cost")
        scatter_plot(
            r.tolist(),
            c.tolist(),
            labels,
            out / "scatter.png",
            title=f"Reward vs cost on held-out responses ({data_name or 'data'})",
        )
        results["scatter"] = {"file": "scatter.png", "responses": len(responses)}
    results["wall_seconds"] = time.perf_counter() - start
    results["versions"] = versions()
    write_json(out / "results.json", results)
    return results
