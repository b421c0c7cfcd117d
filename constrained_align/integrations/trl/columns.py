"""Our canonical pair rows → TRL's ``prompt, chosen, rejected`` rows, plus the safety columns.

TRL's ``DPOTrainer`` tokenises ``prompt``/``chosen``/``rejected`` (applying the chat template for
conversational rows) and drops every other column (ALGORITHMS.md §7). We map each canonical
(PKU-SafeRLHF-like) row into that form *before* TRL tokenises it, so the token ids come from TRL's
own code path and match stock exactly, and we carry six float columns alongside:

=========================  ==========================================================
column                     meaning
=========================  ==========================================================
``ca_chosen_reward``       r of the "chosen" response (NaN when the row has no score)
``ca_rejected_reward``     r of the "rejected" response
``ca_chosen_cost``         c of the "chosen" response (c > 0 unsafe)
``ca_rejected_cost``       c of the "rejected" response
``ca_chosen_unsafe``       h = 1[unsafe] of "chosen" (NaN when unlabelled)
``ca_rejected_unsafe``     h of "rejected"
=========================  ==========================================================

Orientation: "chosen" is the more helpful response (``better_response_id``), so a pair reads
exactly like a stock TRL pair and the TRL-style ``rewards/*`` metrics keep their meaning. When a
row has no helpfulness preference (allowed only for a loss that does not need one, i.e. the
Lagrangian loss, whose label comes from the scores) "chosen" is ``response_1``. Stock
``chosen``/``rejected`` datasets pass through unchanged with NaN extras (enough for ``dpo``).

Multi-turn rows (a non-empty ``context`` column, our schema's earlier turns) become
conversational: prompt = context + user turn, responses = one assistant message each, so the
tokenizer's chat template renders them, as TRL does for any conversational dataset.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from datasets import Dataset, IterableDataset

from constrained_align.data.chat import to_messages

SIDES = ("chosen", "rejected")

#: The score/label fields a loss may need, each as its (chosen, rejected) column pair.
FIELDS: dict[str, tuple[str, str]] = {
    name: (f"ca_chosen_{name}", f"ca_rejected_{name}") for name in ("reward", "cost", "unsafe")
}

#: Every extra column we add; they never reach ``model.forward``.
EXTRA_COLUMNS: tuple[str, ...] = tuple(col for pair in FIELDS.values() for col in pair)

#: Canonical fields consumed by the mapping (removed once mapped).
CANONICAL_COLUMNS = (
    "response_0",
    "response_1",
    "better_response_id",
    "safer_response_id",
    "is_response_0_safe",
    "is_response_1_safe",
    "reward_0",
    "reward_1",
    "cost_0",
    "cost_1",
    "context",
)

# Canonical source of each field, for a response index i.
_SOURCES: dict[str, str] = {
    "reward": "reward_{i}",
    "cost": "cost_{i}",
    "unsafe": "is_response_{i}_safe",
}

Row = Mapping[str, Any]


def _missing(value: Any) -> bool:
    """None or a non-finite number (NaN-coded missing labels and scores)."""
    return value is None or (isinstance(value, float) and not math.isfinite(value))


def _as_float(value: Any) -> float:
    return math.nan if _missing(value) else float(value)


def _as_unsafe(is_safe: Any) -> float:
    return math.nan if _missing(is_safe) else float(not is_safe)


_CONVERT: dict[str, Callable[[Any], float]] = {
    "reward": _as_float,
    "cost": _as_float,
    "unsafe": _as_unsafe,
}


def _messages(prompt: Any, context: Any) -> list[dict[str, str]]:
    """The conversation before the reply: earlier turns, then the final user turn."""
    if isinstance(prompt, str):
        return to_messages(prompt, context)
    return [*(context or []), *prompt]


def _reply(response: Any, conversational: bool) -> Any:
    if conversational and isinstance(response, str):
        return [{"role": "assistant", "content": response}]
    return response


def canonical_to_pair(
    row: Row, *, needs: tuple[str, ...], conversational: bool, loss_name: str
) -> dict[str, Any]:
    """Map one canonical row to ``prompt, chosen, rejected`` plus the extra float columns.

    Args:
        row: a canonical row (``prompt, response_0, response_1`` and optional labels/scores).
        needs: fields (keys of :data:`FIELDS`) the loss needs on every row.
        conversational: render the row as chat messages (see the module docstring).
        loss_name: for error messages.

    Returns:
        The new columns of the row.

    Raises:
        ValueError: if a needed field is missing, or a multi-turn row meets a plain-text dataset.
    """
    better = row.get("better_response_id")
    order = (1, 0) if _missing(better) else (int(better), 1 - int(better))
    if conversational:
        prompt: Any = _messages(row["prompt"], row.get("context"))
    elif row.get("context"):
        raise ValueError("a row has a multi-turn context but the dataset was read as plain text")
    else:
        prompt = row["prompt"]
    out: dict[str, Any] = {"prompt": prompt}
    for side, index in zip(SIDES, order):
        out[side] = _reply(row[f"response_{index}"], conversational)
        for name, template in _SOURCES.items():
            value = row.get(template.format(i=index))
            if _missing(value) and name in needs:
                raise ValueError(
                    f"loss {loss_name!r} needs {template.format(i=index)!r} on every row; a row "
                    f"(prompt {str(row['prompt'])[:60]!r}) has none"
                )
            out[f"ca_{side}_{name}"] = _CONVERT[name](value)
    return out


def _first(dataset: Dataset | IterableDataset) -> Row:
    return next(iter(dataset))


def _has_context(dataset: Dataset | IterableDataset) -> bool:
    """Whether any row carries earlier turns (a streamed dataset is judged by its first row)."""
    if isinstance(dataset, Dataset):
        if "context" not in dataset.column_names:
            return False
        return any(dataset["context"])
    return bool(_first(dataset).get("context"))


def _map_kwargs(dataset: Dataset | IterableDataset, num_proc: int | None, desc: str) -> dict:
    # `IterableDataset.map` takes neither num_proc nor desc.
    return {"num_proc": num_proc, "desc": desc} if isinstance(dataset, Dataset) else {}


def _with_nan_extras(row: Row) -> dict[str, float]:
    return dict.fromkeys(EXTRA_COLUMNS, math.nan)


def to_pair_columns(
    dataset: Dataset | IterableDataset,
    *,
    needs: tuple[str, ...],
    needs_better: bool,
    loss_name: str,
    num_proc: int | None = None,
) -> Dataset | IterableDataset:
    """Bring a canonical or stock preference dataset into TRL's form with the extra columns.

    Args:
        dataset: canonical rows (``response_0``/``response_1``) or stock ``chosen``/``rejected``.
        needs: fields (keys of :data:`FIELDS`) the loss needs on every row.
        needs_better: drop canonical rows without ``better_response_id`` (they carry no
            helpfulness preference, as :func:`constrained_align.data.schema.to_helpfulness_pairs`).
        loss_name: for error messages.
        num_proc: ``dataset_num_proc`` for ``Dataset.map``.

    Returns:
        The dataset with ``prompt, chosen, rejected`` and :data:`EXTRA_COLUMNS`.

    Raises:
        ValueError: if the loss needs safety labels or scores that stock data cannot carry.
    """
    first = _first(dataset)
    if "response_0" not in first:
        if needs:
            raise ValueError(
                f"loss {loss_name!r} needs {', '.join(needs)} per response, which only canonical "
                "rows (prompt, response_0, response_1, ...) carry; got a chosen/rejected dataset"
            )
        if all(col in first for col in EXTRA_COLUMNS):
            return dataset
        return dataset.map(_with_nan_extras, **_map_kwargs(dataset, num_proc, "Adding columns"))
    if needs_better:
        dataset = dataset.filter(
            lambda row: row["better_response_id"] is not None,
            **_map_kwargs(dataset, num_proc, "Dropping pairs without a helpfulness preference"),
        )
    mapper = functools.partial(
        canonical_to_pair,
        needs=needs,
        conversational=isinstance(first["prompt"], list) or _has_context(dataset),
        loss_name=loss_name,
    )
    consumed = [col for col in CANONICAL_COLUMNS if col in first]
    return dataset.map(
        mapper,
        remove_columns=consumed,
        **_map_kwargs(dataset, num_proc, "Mapping canonical pairs to chosen/rejected"),
    )


@dataclass
class SafetyColumnsCollator:
    """Wrap a preference collator so that the extra float columns come out as ``(B,)`` tensors.

    The wrapped collator (TRL's ``DataCollatorForPreference`` by default) ignores unknown keys;
    this adds :data:`EXTRA_COLUMNS` present in the examples. ``compute_loss`` removes them
    again before any model call.

    Args:
        inner: the collator that builds ``input_ids``, ``attention_mask``, ``completion_mask``.
        columns: the columns to add when present.
    """

    inner: Callable[[list[dict[str, Any]]], dict[str, Any]]
    columns: tuple[str, ...] = EXTRA_COLUMNS

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        """Collate ``examples`` with the inner collator, then add the extra columns."""
        batch = self.inner(examples)
        for name in self.columns:
            if name in examples[0]:
                values = [_as_float(example[name]) for example in examples]
                batch[name] = torch.tensor(values, dtype=torch.float32)  # (B,)
        return batch
