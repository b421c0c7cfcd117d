"""``constrained-align train <preset or yaml>``: align a causal LM with a registry key."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from constrained_align.cli.common import add_set_argument, metrics_line, number
from constrained_align.config import ConfigError, LMRunConfig, RunConfig

_print = print


def _dry_run(config: RunConfig, spec: str) -> int:
    """Resolve and validate the config, data sources and model names; load nothing."""
    from constrained_align.runner.build import dry_run

    print(f"{spec}: a valid {config.backend} run of {config.algorithm}")
    if isinstance(config, LMRunConfig):
        for line in dry_run(config):
            print(f"  {line}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from constrained_align.algorithms import load_run_config

    config = load_run_config(args.config, args.set)
    if args.quiet and isinstance(config, LMRunConfig):
        config.output.progress = False
    if args.dry_run:
        return _dry_run(config, args.config)
    if not isinstance(config, LMRunConfig):
        raise ConfigError(
            f"{args.config} trains the closed-form testbed (backend: testbed); run "
            f"`constrained-align testbed --algorithms {config.algorithm}` or pick a causal_lm "
            "preset such as c_dpo:tiny"
        )
    from constrained_align.runner.train import train_lm

    out = Path(args.output_dir or Path("runs") / config.algorithm)
    # Under `accelerate launch` every process runs this command; the first one reports.
    print = _print if int(os.environ.get("RANK", "0")) == 0 else lambda *a, **k: None
    print(f"Training {config.algorithm} on {config.model.policy} → {out}")
    summary = train_lm(config, out, resume=args.resume, overwrite=args.overwrite)
    lam = number(summary["lambda"], ".4g")
    steps, seconds = summary["optimizer_steps"], summary["wall_seconds"]
    print(f"done: {steps} optimizer steps, λ = {lam}, {seconds:.1f} s")
    for when in ("before", "after"):
        if when in summary:
            e = summary[when]
            sizes = " + ".join(f"{n} {name}" for name, n in e["prompts"].items())
            print(f"  {when:<6} {metrics_line(e)}  ({sizes} held-out prompts)")
    print(f"weights: {out / 'final'}; metrics: {out / 'metrics.jsonl'}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``train``."""
    p = sub.add_parser(
        "train",
        help="align a causal LM with an algorithm (preset like c_dpo:tiny, or a YAML file)",
    )
    p.add_argument("config", help="preset like c_dpo:tiny, or a YAML file")
    add_set_argument(p, example=", e.g. --set cost_limit=-0.5 --set lambda_init=1")
    p.add_argument("--output-dir", help="the run folder (default runs/<key>)")
    p.add_argument(
        "--resume", action="store_true", help="continue from the run folder's latest checkpoint"
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start again in a folder that holds a run (removes only what the library wrote)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="resolve and validate the config, data paths and model names; load and train nothing",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_train)
