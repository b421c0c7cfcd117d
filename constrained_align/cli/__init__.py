"""The ``constrained-align`` command.

``list``, ``show-config`` and ``testbed`` live here; ``train`` is in :mod:`.train`,
``data check`` in :mod:`.data`, ``train-scorer`` and ``eval-scorer`` in :mod:`.scoring`,
``compare`` and ``eval`` in :mod:`.compare`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from constrained_align.cli import compare, data, scoring, train
from constrained_align.cli.common import (
    EXIT_INTERRUPTED,
    add_set_argument,
    quiet_dependencies,
    run_guarded,
)
from constrained_align.config import ConfigError, dump_yaml


def _cmd_list(args: argparse.Namespace) -> int:
    from constrained_align.algorithms import REGISTRY

    print(f"{'key':<12} {'family':<8} {'λ':<4} {'status':<12} {'arXiv':<11} paper")
    for key in sorted(REGISTRY, key=lambda k: (REGISTRY[k].family != "online", k)):
        spec = REGISTRY[key]
        print(
            f"{key:<12} {spec.family:<8} {'yes' if spec.has_multiplier else 'no':<4} "
            f"{spec.status:<12} {spec.paper.arxiv or '—':<11} {spec.paper.title}"
        )
        print(f"{'':<12} {spec.summary}")
    return 0


def _cmd_show_config(args: argparse.Namespace) -> int:
    from constrained_align.algorithms import load_run_config

    config = load_run_config(args.config, args.set)
    sys.stdout.write(dump_yaml(config, with_docs=not args.no_docs))
    train = config.train
    sys.stdout.write(f"# train: {type(train).__name__}\n")
    return 0


def _cmd_testbed(args: argparse.Namespace) -> int:
    from constrained_align.algorithms import REGISTRY
    from constrained_align.testbed import generated, instance_a
    from constrained_align.testbed.report import format_table, plot_lambdas, run_keys

    keys = args.algorithms or sorted(REGISTRY, key=lambda k: (REGISTRY[k].family, k))
    unknown = [k for k in keys if k not in REGISTRY]
    if unknown:
        raise ConfigError(f"unknown algorithm(s) {unknown}; known: {', '.join(sorted(REGISTRY))}")
    if args.seed is None:
        bandit, name = instance_a(), "Instance A (β = 0.5, d = −0.3)"
    else:
        bandit = generated(args.seed, beta=args.beta, cost_limit=args.cost_limit)
        name = (
            f"generated instance seed {args.seed} (32×16, β = {args.beta}, d = {args.cost_limit})"
        )
    overrides = {"mode": args.mode} if args.mode else {}
    print(f"Testbed: {name}; λ* = {bandit.lambda_star():.6f}")
    rows = run_keys(keys, bandit, **overrides)
    print(format_table(rows))
    missed = [row.key for row in rows if not row.met]
    print(
        f"\n{len(rows) - len(missed)} of {len(rows)} keys met their target"
        + (f"; missed: {', '.join(missed)}" if missed else "")
    )
    if args.plot:
        print(f"λ trajectories written to {plot_lambdas(rows, args.plot)}")
    return 1 if missed else 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    parser = argparse.ArgumentParser(
        prog="constrained-align",
        description="Safe (constrained) alignment: PPO-Lagrangian and the RL-free dual methods.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="the registered algorithms")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("show-config", help="print a preset or YAML config, resolved")
    p.add_argument("config", help="preset like c_dpo:tiny, or a YAML file")
    add_set_argument(p)
    p.add_argument("--no-docs", action="store_true", help="omit the field documentation")
    p.set_defaults(func=_cmd_show_config)

    p = sub.add_parser("testbed", help="every key on the closed-form bandit vs its exact optimum")
    p.add_argument("--algorithms", nargs="+", metavar="KEY", help="keys to run (default: all)")
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="use the §5.5 generated instance with this seed (default: Instance A)",
    )
    p.add_argument("--beta", type=float, default=0.1, help="β of a generated instance")
    p.add_argument("--cost-limit", type=float, default=-0.5, help="d of a generated instance")
    p.add_argument(
        "--mode",
        choices=["population", "sampled"],
        default=None,
        help="exact expectations (default) or finite samples",
    )
    p.add_argument("--plot", metavar="PNG", help="write the λ trajectories to this PNG")
    p.set_defaults(func=_cmd_testbed)

    train.add_parser(sub)
    data.add_parser(sub)
    scoring.add_parsers(sub)
    compare.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns its exit code (see :mod:`.common`: 0 done, 1 a failed run,
    2 bad input in one line, 3 a bug)."""
    quiet_dependencies()
    args = build_parser().parse_args(argv)
    return run_guarded(args.func, args)


def entry() -> None:
    """The ``constrained-align`` console script: :func:`main`, and Ctrl-C without a traceback."""
    try:
        code = main()
    except KeyboardInterrupt:
        print("constrained-align: interrupted", file=sys.stderr)
        code = EXIT_INTERRUPTED
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    entry()
