"""Data: the canonical pair schema, validation, loaders, chat rendering and the default dataset.

Canonical rows follow PKU-SafeRLHF's schema with nullable ids and labels plus ``context`` and
``source`` (:mod:`~constrained_align.data.schema`). Loaders exist for any json/jsonl/parquet
file with a column mapping, chosen/rejected files, PKU-SafeRLHF, HH-RLHF, XSTest and prompt-only
sets; every loader validates its rows and raises one :class:`DataError` naming file, rows and
fields unless ``skip_invalid=True``. A small permissively licensed dataset ships with the
package (:func:`load_default`).
"""

from constrained_align.data.chat import (
    DEFAULT_CHAT_TEMPLATE,
    ensure_chat_template,
    render_prompt,
    to_messages,
)
from constrained_align.data.check import check_file, file_records, format_report, load_file
from constrained_align.data.default import (
    default_data_dir,
    load_default,
    load_default_prompts,
    split_of,
)
from constrained_align.data.loaders import (
    chosen_rejected_records,
    hh_rlhf_records,
    load_chosen_rejected,
    load_hh_rlhf,
    load_pairs,
    load_pku_saferlhf,
    pairs_records,
    pku_saferlhf_records,
)
from constrained_align.data.prompts import load_prompts, prompt_records
from constrained_align.data.readers import read_records
from constrained_align.data.schema import (
    PAIR_FEATURES,
    PROMPT_FEATURES,
    harmlessness_pairs,
    helpfulness_pairs,
    is_label_conflict,
    labelled_responses,
    pairs_to_dataset,
    prompts_to_dataset,
    seeded_subset,
    unique_prompts,
)
from constrained_align.data.validate import (
    DataError,
    RowError,
    ValidationReport,
    validate_records,
)
from constrained_align.data.xstest import (
    is_safe_completion,
    load_xstest_completions,
    load_xstest_prompts,
    xstest_pair_records,
    xstest_pairs,
)

__all__ = [
    "DEFAULT_CHAT_TEMPLATE",
    "PAIR_FEATURES",
    "PROMPT_FEATURES",
    "DataError",
    "RowError",
    "ValidationReport",
    "check_file",
    "chosen_rejected_records",
    "default_data_dir",
    "ensure_chat_template",
    "file_records",
    "format_report",
    "harmlessness_pairs",
    "helpfulness_pairs",
    "hh_rlhf_records",
    "is_label_conflict",
    "is_safe_completion",
    "labelled_responses",
    "load_chosen_rejected",
    "load_default",
    "load_default_prompts",
    "load_file",
    "load_hh_rlhf",
    "load_pairs",
    "load_pku_saferlhf",
    "load_prompts",
    "load_xstest_completions",
    "load_xstest_prompts",
    "pairs_records",
    "pairs_to_dataset",
    "pku_saferlhf_records",
    "prompt_records",
    "prompts_to_dataset",
    "read_records",
    "render_prompt",
    "seeded_subset",
    "split_of",
    "to_messages",
    "unique_prompts",
    "validate_records",
    "xstest_pair_records",
    "xstest_pairs",
]
