"""The default dataset shipped inside the package (``constrained_align/data/default/``).

Built by ``tools/build_default_data.py`` from permissively licensed sources only: HH-RLHF
helpful-base and harmless-base test splits (MIT), XSTest prompts (CC-BY-4.0) and the Mistral
completions of XSTest (Apache-2.0 model), AdvBench (MIT) and Safe RLHF's evaluation prompts
(Apache-2.0). ``PROVENANCE.md`` in that folder lists sources, checksums, the XSTest safety rule,
the split rule and row counts; ``LICENSES/`` holds the licence texts. No PKU-SafeRLHF or
BeaverTails data (CC-BY-NC-4.0) is included.

Files are read through :mod:`importlib.resources`, so they load from a wheel install too.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from importlib.resources import files
from typing import TYPE_CHECKING, Any, Literal

from datasets import Dataset

from constrained_align.data.schema import pairs_to_dataset, prompts_to_dataset

if TYPE_CHECKING:  # importlib.resources.abc is Python ≥ 3.11; annotations only
    from importlib.resources.abc import Traversable

Split = Literal["train", "eval"]
SPLITS: tuple[str, ...] = ("train", "eval")
EVAL_MODULUS = 5
"""A conversation is in the eval split when sha256(split key) mod 5 == 0 (about 20%)."""


def default_data_dir() -> Traversable:
    """The folder of the shipped default dataset (a :class:`pathlib.Path` for normal installs)."""
    return files("constrained_align.data").joinpath("default")


def split_key(prompt: str, context: Sequence[Mapping[str, str]] = ()) -> str:
    """The text hashed to assign a conversation to a split: JSON of its turns and the prompt."""
    turns = [[m["role"], m["content"]] for m in context]
    return json.dumps([*turns, prompt], ensure_ascii=False)


def split_of(prompt: str, context: Sequence[Mapping[str, str]] = ()) -> Split:
    """``"eval"`` when sha256 of :func:`split_key` mod 5 is 0, else ``"train"``.

    Every row with the same (context, prompt) lands in the same split, whatever file it is in.

    Args:
        prompt: the final user turn.
        context: the earlier turns as ``{"role", "content"}`` messages.

    Returns:
        The split of the conversation.
    """
    digest = hashlib.sha256(split_key(prompt, context).encode("utf-8")).hexdigest()
    return "eval" if int(digest, 16) % EVAL_MODULUS == 0 else "train"


def _read_jsonl_gz(name: str) -> list[dict[str, Any]]:
    with default_data_dir().joinpath(name).open("rb") as raw, gzip.GzipFile(fileobj=raw) as f:
        return [json.loads(line) for line in f if line.strip()]


def _select(rows: list[dict[str, Any]], sources: Iterable[str] | None) -> list[dict[str, Any]]:
    """Rows whose source is one of ``sources`` or below one (``"hh-rlhf"`` ⊇ its folders)."""
    if sources is None:
        return rows
    wanted = [sources] if isinstance(sources, str) else list(sources)
    present = sorted({r["source"] for r in rows})
    unknown = [s for s in wanted if not any(p == s or p.startswith(s + "/") for p in present)]
    if unknown:
        raise ValueError(f"unknown source(s) {unknown}; this file has {present}")
    return [
        r for r in rows if any(r["source"] == s or r["source"].startswith(s + "/") for s in wanted)
    ]


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def load_default(split: Split = "train", *, sources: Iterable[str] | None = None) -> Dataset:
    """The shipped preference pairs (canonical schema).

    Args:
        split: ``"train"`` or ``"eval"``.
        sources: keep only these sources, e.g. ``["hh-rlhf/harmless-base"]``; a prefix such as
            ``"hh-rlhf"`` or ``"xstest"`` selects every source under it. None keeps all.

    Returns:
        Canonical pairs.
    """
    _check_split(split)
    return pairs_to_dataset(_select(_read_jsonl_gz(f"pairs-{split}.jsonl.gz"), sources))


def load_default_prompts(
    split: Split = "train", *, sources: Iterable[str] | None = None
) -> Dataset:
    """The shipped prompt-only rows (``prompt, context, source, category, harmful``).

    Args:
        split: ``"train"`` or ``"eval"`` (Safe RLHF and XSTest prompts are in eval only).
        sources: as in :func:`load_default`, e.g. ``["xstest"]`` or ``["advbench"]``.

    Returns:
        Prompt rows.
    """
    _check_split(split)
    return prompts_to_dataset(_select(_read_jsonl_gz(f"prompts-{split}.jsonl.gz"), sources))
