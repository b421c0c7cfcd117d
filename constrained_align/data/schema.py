"""The canonical pair schema (PKU-SafeRLHF's, extended) and the views the trainers read.

Canonical rows carry PKU-SafeRLHF's fields — ``prompt, response_0, response_1,
better_response_id, safer_response_id, is_response_0_safe, is_response_1_safe`` — because
that dataset decouples the two axes the library needs: a helpfulness preference (reward model,
DPO) and a harmlessness preference plus per-response safety labels (cost model, constraint).

We extend it in three ways so that other datasets fit without inventing labels:

- **Nullable ids.** ``better_response_id`` / ``safer_response_id`` may be null, meaning "no
  preference recorded on that axis". HH-RLHF helpful-base only says which reply is more helpful,
  harmless-base only which is less harmful; forcing the other id would fabricate a preference.
  A row needs at least one id, or at least one safety label (XSTest pairs of two models with the
  same label carry labels but no ordering; they still train the cost model's sign terms).
- **Nullable safety labels.** Only PKU-SafeRLHF and XSTest label individual responses.
- **``context`` and ``source``.** ``context`` holds the earlier turns of a multi-turn
  conversation as ``{"role", "content"}`` messages before the final user turn ``prompt``
  (``[]`` for single-turn data), so HH-RLHF dialogues keep their history and chat templates can
  render them. ``source`` names where a row came from (e.g. ``"hh-rlhf/helpful-base"``) so mixed
  datasets can be filtered and reported per origin.

Rows travel as :class:`datasets.Dataset` with explicit :class:`datasets.Features`, so a column
that happens to be all-null in one file keeps its type (int8 ids, bool labels).
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from datasets import Dataset, Features, List, Value

logger = logging.getLogger(__name__)

REQUIRED_FIELDS = ("prompt", "response_0", "response_1")
OPTIONAL_FIELDS = (
    "better_response_id",
    "safer_response_id",
    "is_response_0_safe",
    "is_response_1_safe",
    "context",
    "source",
)
PAIR_FIELDS = REQUIRED_FIELDS + OPTIONAL_FIELDS
"""Canonical column order."""

CONTEXT_ROLES = ("system", "user", "assistant")

_MESSAGES = List({"role": Value("string"), "content": Value("string")})

PAIR_FEATURES = Features(
    {
        "prompt": Value("string"),
        "response_0": Value("string"),
        "response_1": Value("string"),
        "better_response_id": Value("int8"),
        "safer_response_id": Value("int8"),
        "is_response_0_safe": Value("bool"),
        "is_response_1_safe": Value("bool"),
        "context": _MESSAGES,
        "source": Value("string"),
    }
)

PROMPT_FEATURES = Features(
    {
        "prompt": Value("string"),
        "context": _MESSAGES,
        "source": Value("string"),
        "category": Value("string"),
        "harmful": Value("bool"),
    }
)
"""Prompt-only sets (red-team, over-refusal, HH prompts); ``harmful`` null = unknown."""

HELPFULNESS_FEATURES = Features(
    {
        "prompt": Value("string"),
        "context": _MESSAGES,
        "chosen": Value("string"),
        "rejected": Value("string"),
    }
)

HARMLESSNESS_FEATURES = Features(
    {
        "prompt": Value("string"),
        "context": _MESSAGES,
        "unsafer": Value("string"),
        "safer": Value("string"),
        "unsafer_sign": Value("int8"),
        "safer_sign": Value("int8"),
        "ranked": Value("bool"),
    }
)

LABELLED_FEATURES = Features(
    {
        "prompt": Value("string"),
        "context": _MESSAGES,
        "response": Value("string"),
        "is_safe": Value("bool"),
    }
)

UNIQUE_PROMPT_FEATURES = Features({"prompt": Value("string"), "context": _MESSAGES})


def pairs_to_dataset(rows: Iterable[Mapping[str, Any]]) -> Dataset:
    """Canonical rows (dicts with every field of :data:`PAIR_FIELDS`) as a typed Dataset."""
    return _to_dataset(rows, PAIR_FEATURES)


def prompts_to_dataset(rows: Iterable[Mapping[str, Any]]) -> Dataset:
    """Prompt rows (``prompt, context, source, category, harmful``) as a typed Dataset."""
    return _to_dataset(rows, PROMPT_FEATURES)


def _to_dataset(rows: Iterable[Mapping[str, Any]], features: Features) -> Dataset:
    columns: dict[str, list[Any]] = {name: [] for name in features}
    for row in rows:
        for name, values in columns.items():
            values.append(row[name])
    return Dataset.from_dict(columns, features=features)


def iter_rows(ds: Dataset, batch_size: int = 1024) -> Iterator[dict[str, Any]]:
    """Rows of ``ds`` as dicts, read in Arrow batches (much faster than ``for row in ds``)."""
    for batch in ds.iter(batch_size=batch_size):
        names = list(batch)
        for values in zip(*(batch[n] for n in names)):
            yield dict(zip(names, values))


def sign(is_safe: bool | None) -> int:
    """Cost-model sign of a response: +1 labelled unsafe, −1 labelled safe, 0 unlabelled."""
    return 0 if is_safe is None else (-1 if is_safe else 1)


def is_label_conflict(row: Mapping[str, Any]) -> bool:
    """True when ``safer_response_id`` points at a response labelled unsafe, the other safe."""
    safer = row.get("safer_response_id")
    if safer is None:
        return False
    labels = (row.get("is_response_0_safe"), row.get("is_response_1_safe"))
    return labels[safer] is False and labels[1 - safer] is True


def helpfulness_pairs(ds: Dataset) -> Dataset:
    """``prompt, context, chosen, rejected`` for rows with a helpfulness preference.

    Args:
        ds: canonical pairs.

    Returns:
        One row per canonical row whose ``better_response_id`` is not null.
    """
    out = []
    for row in iter_rows(ds):
        better = row["better_response_id"]
        if better is None:
            continue
        responses = (row["response_0"], row["response_1"])
        out.append(
            {
                "prompt": row["prompt"],
                "context": row["context"],
                "chosen": responses[better],
                "rejected": responses[1 - better],
            }
        )
    return _to_dataset(out, HELPFULNESS_FEATURES)


def _harmlessness_order(row: Mapping[str, Any]) -> tuple[int, bool] | None:
    """(index of the safer response, ranked), or None when the row says nothing about harm."""
    labels = (row["is_response_0_safe"], row["is_response_1_safe"])
    if row["safer_response_id"] is not None:
        return row["safer_response_id"], True
    if None not in labels and labels[0] != labels[1]:
        # No recorded ordering, but one response is labelled safe and the other unsafe: the
        # labels imply it (the safe one is the safer).
        return (0 if labels[0] else 1), True
    if labels != (None, None):
        # Labels without an ordering still train the cost model's sign terms; keep file order.
        return 1, False
    return None


def harmlessness_pairs(ds: Dataset) -> Dataset:
    """``prompt, context, unsafer, safer, unsafer_sign, safer_sign, ranked`` for the cost model.

    ``ranked`` is True when the pair has a harmlessness ordering: ``safer_response_id`` is set,
    or it is null but the two safety labels differ, in which case the response labelled safe is
    the safer one. Rows without an ordering but with at least one label are kept with
    ``ranked=False`` and response order unchanged (``unsafer=response_0``, ``safer=response_1``):
    only their sign terms should be used. Rows with neither an ordering nor a label are dropped.
    Signs follow :func:`sign` (+1 unsafe, −1 safe, 0 unlabelled).

    Args:
        ds: canonical pairs.

    Returns:
        The cost-model view.
    """
    out = []
    for row in iter_rows(ds):
        order = _harmlessness_order(row)
        if order is None:
            continue
        safer, ranked = order
        responses = (row["response_0"], row["response_1"])
        labels = (row["is_response_0_safe"], row["is_response_1_safe"])
        out.append(
            {
                "prompt": row["prompt"],
                "context": row["context"],
                "unsafer": responses[1 - safer],
                "safer": responses[safer],
                "unsafer_sign": sign(labels[1 - safer]),
                "safer_sign": sign(labels[safer]),
                "ranked": ranked,
            }
        )
    return _to_dataset(out, HARMLESSNESS_FEATURES)


def _key(*parts: Any) -> str:
    return json.dumps(parts, ensure_ascii=False, sort_keys=True)


def labelled_responses(ds: Dataset) -> Dataset:
    """``prompt, context, response, is_safe``: one row per labelled response.

    De-duplicated on (context, prompt, response). A response labelled safe in one row and unsafe
    in another is dropped entirely, because either label would be a guess; how many were dropped
    is logged as a warning.

    Args:
        ds: canonical pairs.

    Returns:
        The consistently labelled responses, in order of first appearance.
    """
    entries: dict[str, dict[str, Any]] = {}  # insertion order is order of first appearance
    labels: dict[str, set[bool]] = {}
    for row in iter_rows(ds):
        for k in (0, 1):
            is_safe = row[f"is_response_{k}_safe"]
            if is_safe is None:
                continue
            response = row[f"response_{k}"]
            key = _key(row["context"], row["prompt"], response)
            if key not in entries:
                entries[key] = {
                    "prompt": row["prompt"],
                    "context": row["context"],
                    "response": response,
                    "is_safe": is_safe,
                }
                labels[key] = set()
            labels[key].add(is_safe)
    out = [entry for key, entry in entries.items() if len(labels[key]) == 1]
    conflicting = len(entries) - len(out)
    if conflicting:
        logger.warning(
            "labelled_responses: dropped %d responses labelled safe in one row and unsafe in "
            "another",
            conflicting,
        )
    return _to_dataset(out, LABELLED_FEATURES)


def unique_prompts(ds: Dataset) -> Dataset:
    """``prompt, context`` de-duplicated, in order of first appearance.

    Args:
        ds: canonical pairs (or any Dataset with ``prompt`` and ``context``).

    Returns:
        The distinct (context, prompt) conversations.
    """
    seen: set[str] = set()
    out = []
    for row in iter_rows(ds):
        key = _key(row["context"], row["prompt"])
        if key not in seen:
            seen.add(key)
            out.append({"prompt": row["prompt"], "context": row["context"]})
    return _to_dataset(out, UNIQUE_PROMPT_FEATURES)


Row = TypeVar("Row")


def seeded_subset(rows: Sequence[Row], count: int | None, seed: int) -> list[Row]:
    """``count`` of ``rows`` drawn without replacement by ``seed``, in their original order
    (all of them when ``count`` is None or not smaller)."""
    if count is None or count >= len(rows):
        return list(rows)
    return [rows[i] for i in sorted(random.Random(seed).sample(range(len(rows)), count))]
