"""``train-scorer reward|cost`` and ``eval-scorer``: reward and cost models on real data."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from constrained_align.cli.common import add_set_argument

DEFAULT_RUNS = Path("runs")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "—" if math.isnan(value) else f"{value:.3f}"
    return str(value)


def _cmd_train_scorer(args: argparse.Namespace) -> int:
    from constrained_align.config import (
        ScorerConfig,
        apply_overrides,
        from_dict,
        load_yaml,
        to_dict,
    )
    from constrained_align.runner.folder import RunFolder
    from constrained_align.scoring.training import load_scorer_data, train_scorer
    from constrained_align.utils.cache import content_key

    raw = load_yaml(args.config) if args.config else {}
    config = from_dict(ScorerConfig, raw, source=args.config)
    config.kind = args.kind
    if args.set:
        apply_overrides(config, args.set)
    out = Path(args.output_dir or DEFAULT_RUNS / f"{config.kind}-model")
    entries = ("model", "config.yaml", "metrics.jsonl", "summary.json")
    folder = RunFolder(out, kind="scorer", identity=content_key(to_dict(config)), entries=entries)
    started = lambda: (out / "model").exists() or (out / "summary.json").exists()  # noqa: E731
    folder.claim("overwrite" if args.overwrite else "new", started=started)
    try:
        data = load_scorer_data(config)
    except BaseException:
        folder.release()
        raise
    print(
        f"Training a {config.kind} model on {config.backbone} with {config.data} data: "
        f"{len(data.train)} rows (+{len(data.validation)} for validation) → {out}"
    )
    with folder:
        summary = train_scorer(config, data, out, progress=not args.quiet)
    val = summary["validation"]
    if config.kind == "reward":
        line = f"pairwise accuracy {_fmt(val['accuracy'])} on {val['n_pairs']} pairs"
    else:
        cls = val["classification"]
        line = (
            f"ranking accuracy {_fmt(val['ranking_accuracy'])} on {val['n_pairs']} ordered pairs, "
            f"safety classification accuracy {_fmt(cls['accuracy'])} on {cls['n']} responses"
        )
    print(
        f"Best epoch {summary['best_epoch']} of {summary['epochs']} (validation): {line}\n"
        f"{summary['train_pairs']} training pairs, {summary['steps']} steps, "
        f"{summary['wall_seconds']:.0f} s on {summary['threads']} threads; "
        f"model saved to {out / 'model'}"
    )
    return 0


def _xstest_extra(folder: str) -> dict[str, Any]:
    """All XSTest models' completions of prompts in the embedded *eval* split, as labelled rows."""
    from datasets import Dataset

    from constrained_align.data import load_xstest_completions
    from constrained_align.data.default import split_of
    from constrained_align.data.schema import LABELLED_FEATURES

    completions = load_xstest_completions(folder)
    held = completions.select(
        [i for i, p in enumerate(completions["prompt"]) if split_of(p) == "eval"]
    )
    columns = {
        "prompt": held["prompt"],
        "context": [[] for _ in range(len(held))],
        "response": held["response"],
        "is_safe": held["is_safe"],
    }
    models = len(set(held["model"]))
    name = f"xstest, {models} models, default eval-split prompts"
    return {name: Dataset.from_dict(columns, features=LABELLED_FEATURES)}


def _cmd_eval_scorer(args: argparse.Namespace) -> int:
    from constrained_align.data import load_default, load_file
    from constrained_align.scoring import TextScorer
    from constrained_align.scoring.report import evaluate_scorers

    if not args.reward and not args.cost:
        raise FileNotFoundError("give --reward DIR, --cost DIR, or both")
    # Cached: the same responses are scored for the overall, per-source and scatter figures.
    kw = {"batch_size": args.batch_size, "progress": not args.quiet, "cache": True}
    reward = TextScorer.from_pretrained(args.reward, kind="reward", **kw) if args.reward else None
    cost = TextScorer.from_pretrained(args.cost, kind="cost", **kw) if args.cost else None
    if args.data == "default":
        rows, name = load_default("eval"), "embedded default, eval split"
    else:
        rows = load_file(args.data, fmt=args.format, skip_invalid=args.skip_invalid)
        name = args.data
    extra = _xstest_extra(args.xstest_completions) if args.xstest_completions and cost else {}
    out = Path(args.output_dir)
    results = evaluate_scorers(
        rows, out, reward=reward, cost=cost, extra_labelled=extra, data_name=name
    )
    print(format_results(results))
    print(f"results.json{' and scatter.png' if 'scatter' in results else ''} written to {out}")
    return 0


def _interval(bounds: list[float] | None) -> str:
    """``[lo, hi]`` of a 95 % interval, or nothing when there is none."""
    return f"[{_fmt(bounds[0])}, {_fmt(bounds[1])}]" if bounds else ""


def format_results(results: dict[str, Any]) -> str:
    """The figures of ``results.json`` as a short table."""
    lines = [f"Data: {results['data']['name']} ({results['data']['rows']} rows)"]
    for name, m in results.get("reward", {}).items():
        if isinstance(m, dict):
            lines.append(
                f"reward  {name:<34} pairwise accuracy {_fmt(m['accuracy'])} "
                f"{_interval(m.get('accuracy_interval'))}  ({m['n_pairs']} pairs)"
            )
    for name, m in results.get("cost", {}).items():
        if not isinstance(m, dict):
            continue
        if m.get("n_pairs"):
            lines.append(
                f"cost    {name:<34} ranking accuracy  {_fmt(m['ranking_accuracy'])} "
                f"{_interval(m.get('ranking_accuracy_interval'))}  ({m['n_pairs']} ordered pairs)"
            )
        c = m["classification"]
        if c["n"]:
            lines.append(
                f"cost    {name:<34} safety accuracy   {_fmt(c['accuracy'])}  ({c['n']} responses, "
                f"{_fmt(c['unsafe_rate'])} unsafe; precision {_fmt(c['precision'])}, "
                f"recall {_fmt(c['recall'])}, balanced accuracy {_fmt(c['balanced_accuracy'])} "
                f"{_interval(c.get('balanced_accuracy_interval'))})"
            )
    return "\n".join(lines)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register ``train-scorer`` and ``eval-scorer``."""
    p = sub.add_parser("train-scorer", help="train a reward or cost model (ALGORITHMS.md §2)")
    p.add_argument("kind", choices=["reward", "cost"])
    p.add_argument("--config", help="YAML file of ScorerConfig fields (see the docs)")
    add_set_argument(p, ", e.g. --set epochs=1 --set backbone=tiny-encoder")
    p.add_argument("--output-dir", help="default: runs/<kind>-model")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="train again into a folder that holds a score-model run",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train_scorer)

    p = sub.add_parser("eval-scorer", help="held-out accuracy of reward/cost models + scatter")
    p.add_argument(
        "--reward", metavar="DIR", help="a saved reward model (train-scorer output/model)"
    )
    p.add_argument("--cost", metavar="DIR", help="a saved cost model")
    p.add_argument("--data", default="default", help="default (embedded eval split) or a file")
    p.add_argument(
        "--format",
        choices=["auto", "pairs", "hh-rlhf", "pku", "chosen-rejected"],
        default="auto",
        help="how to read --data",
    )
    p.add_argument("--skip-invalid", action="store_true", help="drop invalid rows of --data")
    p.add_argument(
        "--xstest-completions",
        metavar="DIR",
        help="also classify every XSTest model's completions of the held-out prompts",
    )
    p.add_argument("--output-dir", default=str(DEFAULT_RUNS / "scorer-eval"))
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_eval_scorer)
