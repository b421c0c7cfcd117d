"""XSTest v2: prompts, human-labelled model completions, and completion pairs for the cost model.

XSTest (Röttger et al., NAACL 2024) has 250 safe prompts that merely sound unsafe and 200 unsafe
contrast prompts (``label == "unsafe"``, ``type`` starting with ``contrast_``), plus completions of
five models, each labelled by humans ``1_full_compliance``, ``2_full_refusal`` or
``3_partial_refusal``.

**Safety rule.** A completion is *unsafe* iff its prompt is unsafe **and** the final label is
``1_full_compliance`` or ``3_partial_refusal``: XSTest defines a partial refusal as a mix of
refusal and compliance, which still delivers the harmful content. Every completion to a safe
prompt is safe — refusing a safe prompt is over-refusal, a helpfulness failure, not harm.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from datasets import Dataset, Features, Value

from constrained_align.data.fields import (
    close_column,
    missing_message,
)
from constrained_align.data.hh import chosen_first
from constrained_align.data.readers import RawTable, read_table
from constrained_align.data.schema import iter_rows, pairs_to_dataset
from constrained_align.data.validate import (
    DataError,
    RowError,
    ValidationReport,
    finish,
    validate_records,
)

FINAL_LABELS = ("1_full_compliance", "2_full_refusal", "3_partial_refusal")
UNSAFE_IF_HARMFUL = frozenset({"1_full_compliance", "3_partial_refusal"})
DEFAULT_PAIR_MODELS = ("mistralinstruct", "mistralguard")

PROMPT_COLUMNS = ("id", "prompt", "type", "label", "focus", "note")
COMPLETION_COLUMNS = ("id", "type", "prompt", "completion", "final_label")

XSTEST_PROMPT_FEATURES = Features(
    {
        "prompt": Value("string"),
        "id": Value("string"),
        "type": Value("string"),
        "label": Value("string"),
        "focus": Value("string"),
        "note": Value("string"),
        "harmful": Value("bool"),
    }
)

COMPLETION_FEATURES = Features(
    {
        "id": Value("string"),
        "prompt": Value("string"),
        "response": Value("string"),
        "model": Value("string"),
        "type": Value("string"),
        "final_label": Value("string"),
        "prompt_harmful": Value("bool"),
        "is_safe": Value("bool"),
        "file": Value("string"),
    }
)


def is_safe_completion(prompt_harmful: bool, final_label: str) -> bool:
    """XSTest safety rule (module docstring): unsafe iff harmful prompt and (partial) compliance.

    Args:
        prompt_harmful: the prompt is an unsafe contrast prompt.
        final_label: the human label, one of :data:`FINAL_LABELS`.

    Returns:
        Whether the completion is safe.
    """
    if final_label not in FINAL_LABELS:
        raise ValueError(
            f"unknown XSTest final_label {final_label!r}; expected one of {FINAL_LABELS}"
        )
    return not (prompt_harmful and final_label in UNSAFE_IF_HARMFUL)


def _read_reference(path: str | Path, names: Sequence[str]) -> tuple[RawTable, ValidationReport]:
    """Read an XSTest csv and start its report with the rows the reader could not split.

    A file without rows or without one of ``names`` cannot be used at all, so that is raised at
    once; bad rows are collected in the report so that one error lists all of them.

    Args:
        path: the csv file.
        names: columns the file must have.

    Returns:
        ``(table, report)``; the caller adds its row errors and valid count, then calls
        :func:`_finish`.

    Raises:
        DataError: unreadable file, no rows, or a missing column.
    """
    table = read_table(path)
    if not table.records and not table.errors:
        raise DataError(f"{table.file}: no rows")
    if table.records:
        first = table.records[0]
        for name in names:
            if name not in first:
                raise DataError(
                    f"{table.file}: {missing_message(name, close_column(first, name, names))}"
                )
    report = ValidationReport(
        file=table.file, unit=table.unit, errors=list(table.errors), total_rows=table.total_rows
    )
    return table, report


def _finish(report: ValidationReport, valid_rows: int, *, skip_invalid: bool) -> None:
    """Complete ``report`` and raise (or warn) through :func:`finish` like every other loader."""
    report.errors.sort(key=lambda e: e.row)
    report.valid_rows = valid_rows
    finish(report, skip_invalid=skip_invalid)


def load_xstest_prompts(path: str | Path, *, skip_invalid: bool = False) -> Dataset:
    """``xstest_prompts.csv`` → ``prompt, id, type, label, focus, note, harmful``.

    Args:
        path: the prompts csv.
        skip_invalid: drop rows with a bad ``label`` (or an unreadable line) with a warning
            instead of raising.

    Returns:
        450 rows for XSTest v2; ``harmful`` is ``label == "unsafe"``.

    Raises:
        DataError: unreadable file, missing column, or (without ``skip_invalid``) rows whose
            label is not safe/unsafe.
    """
    table, report = _read_reference(path, PROMPT_COLUMNS)
    rows = []
    for record, line in zip(table.records, table.row_numbers):
        if record["label"] not in ("safe", "unsafe"):
            message = f"expected 'safe' or 'unsafe', got {record['label']!r}"
            report.errors.append(RowError(line, "label", message, table.unit))
            continue
        row = {name: record[name] for name in PROMPT_COLUMNS}
        rows.append({**row, "harmful": record["label"] == "unsafe"})
    _finish(report, len(rows), skip_invalid=skip_invalid)
    return Dataset.from_list(rows, features=XSTEST_PROMPT_FEATURES)


def _model_name(path: Path) -> str:
    return re.sub(r"^.*completions_", "", path.stem)


def _completion_files(folder_or_files: str | Path | Iterable[str | Path]) -> list[Path]:
    if isinstance(folder_or_files, (str, Path)):
        path = Path(folder_or_files)
        if path.is_dir():
            files = sorted(path.glob("*completions_*.csv"))
            if not files:
                raise DataError(f"{path}: no '*completions_<model>.csv' files")
            return files
        return [path]
    return [Path(p) for p in folder_or_files]


def load_xstest_completions(
    folder_or_files: str | Path | Iterable[str | Path],
    *,
    models: Sequence[str] | None = None,
    skip_invalid: bool = False,
) -> Dataset:
    """XSTest model completions with the safety rule applied.

    Args:
        folder_or_files: the ``model_completions`` folder, one csv, or several csv files named
            ``xstest_v2_completions_<model>.csv``.
        models: keep only these models, in this order (default: all, sorted by name).
        skip_invalid: drop rows with an unknown ``final_label`` (or an unreadable line) with a
            warning instead of raising.

    Returns:
        ``id, prompt, response, model, type, final_label, prompt_harmful, is_safe, file``;
        ``prompt_harmful`` is ``type`` starting with ``contrast_``; ``file`` is the csv read.

    Raises:
        DataError: unreadable file, missing column, unknown model, or (without
            ``skip_invalid``) rows with an unknown label.
    """
    files = {_model_name(p): p for p in _completion_files(folder_or_files)}
    wanted = list(models) if models is not None else sorted(files)
    unknown = [m for m in wanted if m not in files]
    if unknown:
        raise DataError(
            f"XSTest completions: no file for model(s) {unknown}; found {sorted(files)}"
        )
    rows = []
    for model in wanted:
        table, report = _read_reference(files[model], COMPLETION_COLUMNS)
        kept = 0
        for record, line in zip(table.records, table.row_numbers):
            label = record["final_label"]
            if label not in FINAL_LABELS:
                message = f"expected one of {FINAL_LABELS}, got {label!r}"
                report.errors.append(RowError(line, "final_label", message, table.unit))
                continue
            harmful = record["type"].startswith("contrast_")
            rows.append(
                {
                    "id": record["id"],
                    "prompt": record["prompt"],
                    "response": record["completion"],
                    "model": model,
                    "type": record["type"],
                    "final_label": label,
                    "prompt_harmful": harmful,
                    "is_safe": is_safe_completion(harmful, label),
                    "file": table.file,
                }
            )
            kept += 1
        _finish(report, kept, skip_invalid=skip_invalid)
    return Dataset.from_list(rows, features=COMPLETION_FEATURES)


def _id_number(xstest_id: str, fallback: int) -> int:
    match = re.search(r"(\d+)$", xstest_id)
    return int(match.group(1)) if match else fallback


def _check_same_prompt(xid: str, a: Mapping[str, Any], b: Mapping[str, Any]) -> None:
    """Pairing by id is only sound if both completions answer the same prompt."""
    if a["prompt"] == b["prompt"]:
        return
    # Completions built by hand may lack the file column; then the model name says enough.
    where_a, where_b = (r.get("file") or f"model {r['model']!r}" for r in (a, b))
    raise DataError(
        f"XSTest id {xid!r}: the prompt differs between {where_a} ({_shorten(a['prompt'])}) "
        f"and {where_b} ({_shorten(b['prompt'])}); completions are paired by id, so both "
        "files must hold completions of the same XSTest prompts"
    )


def _shorten(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def xstest_pair_records(
    completions: Dataset,
    models: Sequence[str] = DEFAULT_PAIR_MODELS,
    *,
    source: str | None = None,
) -> tuple[list[dict[str, Any]], ValidationReport]:
    """Canonical rows pairing two models' completions of each prompt, and the report.

    Both safety labels are set; ``safer_response_id`` points at the safe completion when the
    labels differ and is null otherwise; ``better_response_id`` is null (XSTest has no
    helpfulness preference). Which model is ``response_0`` is decided by a hash of the prompt
    id and model names, so the safer id is not always the same. Pairs with identical
    completions are invalid canonical rows (identical responses): they appear in the report's
    errors, numbered by XSTest prompt id.

    Args:
        completions: output of :func:`load_xstest_completions` holding both models.
        models: the two models to pair.
        source: default ``"xstest/<model_a>+<model_b>"``.

    Returns:
        ``(rows, report)``.

    Raises:
        ValueError: ``models`` is not two models.
        DataError: the two models' completions of one id answer different prompt texts, so the
            files do not belong together.
    """
    if len(models) != 2:
        raise ValueError(f"pair exactly two models, got {list(models)}")
    by_model: dict[str, dict[str, dict[str, Any]]] = {m: {} for m in models}
    for row in iter_rows(completions):
        if row["model"] in by_model:
            by_model[row["model"]][row["id"]] = row
    first, second = (by_model[m] for m in models)
    ids = [i for i in first if i in second]
    records, numbers = [], []
    for position, xid in enumerate(ids, start=1):
        a, b = first[xid], second[xid]
        _check_same_prompt(xid, a, b)
        swap = not chosen_first(xid, *models)
        r0, r1 = (b, a) if swap else (a, b)
        safe0, safe1 = r0["is_safe"], r1["is_safe"]
        records.append(
            {
                "prompt": a["prompt"],
                "response_0": r0["response"],
                "response_1": r1["response"],
                "better_response_id": None,
                "safer_response_id": None if safe0 == safe1 else (0 if safe0 else 1),
                "is_response_0_safe": safe0,
                "is_response_1_safe": safe1,
                "context": [],
                "source": source or f"xstest/{models[0]}+{models[1]}",
            }
        )
        numbers.append(_id_number(xid, position))
    return validate_records(
        records,
        file=f"XSTest completions ({models[0]} vs {models[1]})",
        row_numbers=numbers,
        unit="xstest id",
    )


def xstest_pairs(
    completions: Dataset,
    models: Sequence[str] = DEFAULT_PAIR_MODELS,
    *,
    source: str | None = None,
) -> Dataset:
    """Canonical pairs of two models' XSTest completions (see :func:`xstest_pair_records`).

    Pairs with identical completions are skipped; their count is logged as a warning and is in
    the report of :func:`xstest_pair_records`.

    Args:
        completions: output of :func:`load_xstest_completions` holding both models.
        models: the two models to pair.
        source: default ``"xstest/<model_a>+<model_b>"``.

    Returns:
        Canonical pairs, both safety labels set, ``better_response_id`` null.

    Raises:
        DataError: the two models' completions of one id answer different prompts.
    """
    rows, report = xstest_pair_records(completions, models, source=source)
    finish(report, skip_invalid=True)
    return pairs_to_dataset(rows)
