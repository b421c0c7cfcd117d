"""``constrained-align compare`` and ``constrained-align eval``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from constrained_align.cli.common import add_set_argument, metrics_line


def _cmd_compare(args: argparse.Namespace) -> int:
    if args.testbed:
        from constrained_align.apps.compare_testbed import compare_testbed

        out = Path(args.output_dir or "runs/compare-testbed")
        compare_testbed(args.algorithms, out)
        print(f"report: {out / 'report.md'}; results: {out / 'results.json'}")
        return 0
    from constrained_align.apps.compare import compare, load_compare_config

    overrides = list(args.set)
    if args.algorithms:
        overrides.append("algorithms=" + json.dumps(args.algorithms))
    config = load_compare_config(args.preset, overrides)
    out = Path(args.output_dir or f"runs/compare-{Path(args.preset).stem}")
    print(f"Comparing {', '.join(config.algorithms)} → {out}")
    results = compare(
        config, out, preset=args.preset, progress=not args.quiet, overwrite=args.overwrite
    )
    for model in results["models"]:
        ev = model["eval"].get("greedy") or next(iter(model["eval"].values()))
        print(f"  {model['name']:<10} {metrics_line(ev)}")
    print(f"{results['wall_seconds'] / 60:.1f} min; report: {out / 'report.md'}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from constrained_align.apps.evaluate import evaluate_run

    result = evaluate_run(Path(args.model), args.set, output=args.output, reference=args.reference)
    for mode, ev in result["eval"].items():
        print(f"{mode:<8} {metrics_line(ev, kl=True)}")
    print(f"written: {result['path']}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register ``compare`` and ``eval``."""
    p = sub.add_parser(
        "compare",
        help="align one model with several algorithms at one cost limit and write a report",
    )
    p.add_argument("--preset", default="default", help="default | tiny | a compare YAML file")
    p.add_argument("--algorithms", nargs="+", help="keys (and 'reference') to compare")
    p.add_argument("--output-dir", help="report folder (default runs/compare-<preset>)")
    p.add_argument("--testbed", action="store_true", help="the closed-form testbed instead")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start again in a folder that holds another comparison (removes only its files)",
    )
    add_set_argument(p, example=", e.g. --set cost_limit=-2 --set eval.helpful_prompts=32")
    p.set_defaults(func=_cmd_compare)

    e = sub.add_parser("eval", help="evaluate a trained run folder on the held-out prompts")
    e.add_argument("--model", required=True, help="a run folder of `train` (config.yaml, final/)")
    e.add_argument("--output", help="where to write the JSON (default <model>/eval.json)")
    e.add_argument("--reference", action="store_true", help="evaluate the run's reference model")
    add_set_argument(e, example=", e.g. --set helpful_prompts=32 --set modes=[greedy]")
    e.set_defaults(func=_cmd_eval)
