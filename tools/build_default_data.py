"""Build the default dataset shipped in ``constrained_align/data/default/``.

Usage (from the repository root)::

    python tools/build_default_data.py --inputs DIR

where ``DIR`` is the input folder holding the upstream files under the paths listed in
:data:`INPUTS` (``hh-rlhf/helpful-base/test.jsonl.gz``, ``xstest/xstest_prompts.csv``, ...) and
their licence and NOTICE files.

The build is deterministic: the same inputs give byte-identical files (gzip with mtime 0 and no
file name, rows in source order, no timestamps or absolute paths in PROVENANCE.md). Inputs whose
NOTICE gives a sha256 are checked against it. Only permissively licensed data goes in; see
``PROVENANCE.md`` (written by this script) for what and why.

The build is atomic: everything is written to a temporary folder beside the destination and
checked against the size cap there, then swapped into place, so a failed build leaves the
destination as it was.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from constrained_align.data.default import split_key, split_of
from constrained_align.data.loaders import hh_rlhf_records
from constrained_align.data.prompts import load_prompts
from constrained_align.data.schema import iter_rows
from constrained_align.data.validate import ValidationReport, finish
from constrained_align.data.xstest import load_xstest_completions, xstest_pair_records

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "constrained_align" / "data" / "default"
XSTEST_MODELS = ("mistralinstruct", "mistralguard")
MAX_BYTES = 3_000_000

# path in the input folder → (sha256 stated in its dataset's NOTICE.md or None, upstream,
# licence)
INPUTS: dict[str, tuple[str | None, str, str]] = {
    "hh-rlhf/helpful-base/test.jsonl.gz": (
        "8be3fc1a13b27901631696f2be6f184c799f1baeaf145f53ac5db24960adc37b",
        "anthropics/hh-rlhf @354e5c3 helpful-base/test.jsonl.gz (Git LFS object; copy from "
        "DaehanKim/EasyRLHF @fc5016d data/helpful-base/test.jsonl.gz, identical bytes)",
        "MIT",
    ),
    "hh-rlhf/harmless-base/test.jsonl.gz": (
        "ebfaaed21162a4de120ae85366075b34425e2a6303fac59b99555002f7016f03",
        "anthropics/hh-rlhf @354e5c3 harmless-base/test.jsonl.gz",
        "MIT",
    ),
    "advbench/harmful_behaviors.csv": (
        "6cd1a5c63c07610d7eb67307772ee5606017ee950b5770ab288a2c487489d3e1",
        "llm-attacks/llm-attacks data/advbench/harmful_behaviors.csv (copy from "
        "PKU-Alignment/align-anything @3f9decc, unchanged)",
        "MIT",
    ),
    "safe-rlhf-eval/problem.json": (
        "11b70977db38f638500c7dd86f786aceca4a1ce97688ecc1bc4947b2c6ce7132",
        "PKU-Alignment/safe-rlhf safe_rlhf/evaluate/gpt4/problem.json (copy from "
        "shuoli90/safe-rlhf @00d1098)",
        "Apache-2.0",
    ),
    "xstest/xstest_prompts.csv": (
        "11783fb294ed017473ee53c207d71f2161c7672c8d0b037501e78387f801cb5a",
        "paul-rottger/exaggerated-safety @d7bb5bd xstest_prompts.csv",
        "CC-BY-4.0",
    ),
    **{
        f"xstest/model_completions/xstest_v2_completions_{m}.csv": (
            None,
            f"paul-rottger/exaggerated-safety @d7bb5bd "
            f"model_completions/xstest_v2_completions_{m}.csv",
            "completions of Mistral-7B-Instruct (Apache-2.0); labels CC-BY-4.0",
        )
        for m in XSTEST_MODELS
    },
}

# LICENSES/ file → (path in the input folder, text after which the licence starts, if any)
LICENSES = {
    "HH-RLHF-MIT.txt": ("hh-rlhf/LICENSE", None),
    "AdvBench-MIT.txt": ("advbench/NOTICE.md", "\n---\n"),  # the MIT text follows the rule
    "XSTest-CC-BY-4.0.txt": ("xstest/LICENSE", None),
    "safe-rlhf-Apache-2.0.txt": ("safe-rlhf-eval/LICENSE", None),
}


def sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_inputs(inputs: Path) -> dict[str, str]:
    """sha256 of every input; exit if one is missing or differs from its NOTICE.

    Args:
        inputs: the input folder.

    Returns:
        Path in the input folder → sha256, for every entry of :data:`INPUTS`.
    """
    digests = {}
    for name, (expected, _, _) in INPUTS.items():
        if not (inputs / name).is_file():
            sys.exit(f"{inputs / name}: missing from the input folder")
        digest = sha256(inputs / name)
        if expected and digest != expected:
            sys.exit(f"{inputs / name}: sha256 {digest} differs from its NOTICE ({expected})")
        digests[name] = digest
    return digests


def write_jsonl_gz(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Write rows as jsonl in a deterministic gzip: no file name, mtime 0, fixed level."""
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=9) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
            f.write(b"\n")
    path.write_bytes(buffer.getvalue())


def reasons(report: ValidationReport) -> Counter[str]:
    """Invalid rows per ``"field: message"`` of each row's first error."""
    first = {}
    for error in report.errors:
        first.setdefault(error.row, f"{error.field}: {error.message}")
    return Counter(first.values())


def pair_rows(inputs: Path) -> tuple[list[dict[str, Any]], dict[str, ValidationReport]]:
    """Canonical pairs from HH-RLHF helpful-base and harmless-base and the XSTest Mistral pairs.

    Invalid rows are dropped (and logged); their counts go into PROVENANCE.md.

    Args:
        inputs: the input folder.

    Returns:
        ``(rows, reports)``: the pairs in source order, and a validation report per input
        named by its path in the input folder (or a description for the XSTest pairs).
    """
    rows, reports = [], {}
    for folder in ("helpful-base", "harmless-base"):
        name = f"hh-rlhf/{folder}/test.jsonl.gz"
        hh_rows, report = hh_rlhf_records(inputs / name, source=f"hh-rlhf/{folder}")
        report.file = name
        reports[name] = finish(report, skip_invalid=True)
        rows += hh_rows
    completions = load_xstest_completions(
        inputs / "xstest" / "model_completions", models=XSTEST_MODELS
    )
    xs_rows, report = xstest_pair_records(completions, XSTEST_MODELS)
    reports["XSTest pairs (mistralinstruct vs mistralguard)"] = finish(report, skip_invalid=True)
    return rows + xs_rows, reports


def prompt_rows(
    inputs: Path, pairs: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """HH prompts and AdvBench (split by hash); Safe RLHF and XSTest prompts (eval only).

    Args:
        inputs: the input folder.
        pairs: the rows of :func:`pair_rows`, whose HH conversations become prompt rows.

    Returns:
        ``(rows, {"eval_only": rows})``: prompts to split by hash, and prompts for eval only.
    """
    rows, seen = [], set()
    for pair in pairs:
        if pair["source"].startswith("hh-rlhf/"):
            key = (pair["source"], split_key(pair["prompt"], pair["context"]))
            if key not in seen:
                seen.add(key)
                rows.append(
                    {
                        "prompt": pair["prompt"],
                        "context": pair["context"],
                        "source": pair["source"],
                        "category": None,
                        "harmful": None,  # red-team attempts of mixed severity; not labelled
                    }
                )
    rows += iter_rows(load_prompts(inputs / "advbench/harmful_behaviors.csv", kind="advbench"))
    eval_only = list(iter_rows(load_prompts(inputs / "safe-rlhf-eval/problem.json")))
    eval_only += iter_rows(load_prompts(inputs / "xstest/xstest_prompts.csv", kind="xstest"))
    return rows, {"eval_only": eval_only}


def split_all(
    pairs: list[dict[str, Any]], prompts: list[dict[str, Any]], eval_only: list[dict[str, Any]]
) -> tuple[dict[str, list], dict[str, list], Counter[str]]:
    """Hash split; eval-only prompts go to eval unless the same conversation is in train.

    Returns:
        ``(pairs by split, prompts by split, withheld eval-only prompts per source)``.
    """
    out_pairs: dict[str, list] = {"train": [], "eval": []}
    out_prompts: dict[str, list] = {"train": [], "eval": []}
    for row in pairs:
        out_pairs[split_of(row["prompt"], row["context"])].append(row)
    for row in prompts:
        out_prompts[split_of(row["prompt"], row["context"])].append(row)
    train_keys = {split_key(r["prompt"], r["context"]) for r in out_pairs["train"]}
    train_keys |= {split_key(r["prompt"], r["context"]) for r in out_prompts["train"]}
    withheld: Counter[str] = Counter()
    for row in eval_only:
        if split_key(row["prompt"], row["context"]) in train_keys:
            withheld[row["source"]] += 1
        else:
            out_prompts["eval"].append(row)
    return out_pairs, out_prompts, withheld


def count_table(files: dict[str, list[dict[str, Any]]]) -> list[str]:
    """The row-count table of PROVENANCE.md: rows per file and source, and per file.

    Args:
        files: output file name → its rows.

    Returns:
        Markdown table lines.
    """
    lines = ["| file | source | rows |", "|---|---|---|"]
    for name, rows in files.items():
        for source, n in sorted(Counter(r["source"] for r in rows).items()):
            lines.append(f"| {name} | {source} | {n} |")
        lines.append(f"| {name} | **total** | **{len(rows)}** |")
    return lines


def provenance(
    digests: dict[str, str],
    reports: dict[str, ValidationReport],
    files: dict[str, list[dict[str, Any]]],
    withheld: Counter[str],
) -> str:
    """PROVENANCE.md: ``default_data_provenance.md`` filled in with this build's tables.

    Args:
        digests: sha256 of each input (:func:`check_inputs`).
        reports: validation report of each pair input (:func:`pair_rows`).
        files: output file name → its rows.
        withheld: eval-only prompts withheld per source (:func:`split_all`).

    Returns:
        The text of PROVENANCE.md.
    """
    template = (Path(__file__).parent / "default_data_provenance.md").read_text(encoding="utf-8")
    input_rows = ["| input | sha256 | upstream | licence |", "|---|---|---|---|"]
    for name, (_, upstream, licence) in INPUTS.items():
        input_rows.append(f"| {name} | `{digests[name]}` | {upstream} | {licence} |")
    dropped = ["| input | rows read | kept | dropped | reason (rows) |", "|---|---|---|---|---|"]
    for name, report in reports.items():
        why = "; ".join(f"{reason} ({n})" for reason, n in sorted(reasons(report).items()))
        dropped.append(
            f"| {name} | {report.total_rows} | {report.valid_rows} | {report.invalid_rows} | "
            f"{why or '—'} |"
        )
    held = ", ".join(f"{s}: {n}" for s, n in sorted(withheld.items())) or "none"
    return template.format(
        inputs="\n".join(input_rows),
        dropped="\n".join(dropped),
        counts="\n".join(count_table(files)),
        withheld=held,
    )


def write_dataset(inputs: Path, folder: Path) -> None:
    """Write every file of the default dataset into ``folder``.

    Args:
        inputs: the input folder.
        folder: an existing, empty folder.
    """
    digests = check_inputs(inputs)
    pairs, reports = pair_rows(inputs)
    prompts, extra = prompt_rows(inputs, pairs)
    out_pairs, out_prompts, withheld = split_all(pairs, prompts, extra["eval_only"])
    files = {f"pairs-{s}.jsonl.gz": out_pairs[s] for s in ("train", "eval")}
    files |= {f"prompts-{s}.jsonl.gz": out_prompts[s] for s in ("train", "eval")}
    for name, rows in files.items():
        write_jsonl_gz(folder / name, rows)
    (folder / "PROVENANCE.md").write_text(
        provenance(digests, reports, files, withheld), encoding="utf-8"
    )
    (folder / "LICENSES").mkdir()
    for name, (source, after) in LICENSES.items():
        text = (inputs / source).read_text(encoding="utf-8")
        if after:
            text = text.split(after, 1)[1].lstrip("\n")
        (folder / "LICENSES" / name).write_text(text, encoding="utf-8")


def swap_into_place(new: Path, out: Path) -> None:
    """Make the finished folder ``new`` the folder ``out``, replacing any old one.

    ``os.replace`` cannot overwrite a non-empty folder, so the old one is first moved aside
    (and moved back if the swap fails), then removed.

    Args:
        new: the complete new folder, on the same file system as ``out``.
        out: the destination.
    """
    if not out.exists():
        os.replace(new, out)
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.replace(out, aside / out.name)
    try:
        os.replace(new, out)
    except OSError:
        os.replace(aside / out.name, out)
        aside.rmdir()
        raise
    shutil.rmtree(aside)


def build(inputs: Path, out: Path) -> dict[str, int]:
    """Build the default dataset into ``out`` atomically.

    Everything is written to a temporary folder beside ``out`` and checked against
    :data:`MAX_BYTES` there; only a complete build within the cap replaces ``out``, so a failed
    build leaves ``out`` as it was and no partial files behind.

    Args:
        inputs: the input folder.
        out: the destination folder (created, or replaced as a whole).

    Returns:
        Size in bytes of each file written, by path relative to ``out``.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.build-", dir=out.parent))
    try:
        write_dataset(inputs, staging)
        sizes = {
            p.relative_to(staging).as_posix(): p.stat().st_size
            for p in sorted(staging.rglob("*"))
            if p.is_file()
        }
        if sum(sizes.values()) > MAX_BYTES:
            sys.exit(
                f"default dataset is {sum(sizes.values())} bytes, over {MAX_BYTES}; "
                f"{out} is unchanged"
            )
        # mkdtemp makes a private folder (0o700); the package folder should stay readable.
        staging.chmod(out.stat().st_mode & 0o777 if out.is_dir() else 0o755)
        swap_into_place(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return sizes


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: build, then print the size of each file.

    Args:
        argv: arguments without the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit status (0; failures exit through :func:`sys.exit` with a message).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--inputs",
        type=Path,
        required=True,
        metavar="DIR",
        help="input folder holding the upstream files (paths as listed in INPUTS)",
    )
    parser.add_argument("--out", type=Path, default=OUT, help="output folder (default: in-package)")
    args = parser.parse_args(argv)
    sizes = build(args.inputs, args.out)
    for name, size in sizes.items():
        print(f"{size:>9}  {name}")
    print(f"{sum(sizes.values()):>9}  total in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
