"""What every sub-command shares: one-line errors for mistakes a user can fix."""

from __future__ import annotations

import argparse
import sys


def add_set_argument(parser: argparse.ArgumentParser, example: str = "") -> None:
    """The repeatable ``--set KEY=VALUE`` override every config-driven command takes."""
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override by dotted path or unique field name (repeatable)" + example,
    )


def fail(message: object) -> int:
    """Print ``constrained-align: error: <first line of message>`` to stderr; return exit code 2."""
    text = str(message).strip().splitlines()
    print(f"constrained-align: error: {text[0] if text else message}", file=sys.stderr)
    for line in text[1:]:
        print(f"  {line}", file=sys.stderr)
    return 2


def user_error_types() -> tuple[type[BaseException], ...]:
    """Errors that mean bad input (config, data, a missing model), not a bug in the library.

    Imported on demand: the data and model layers pull in ``datasets`` and ``transformers``,
    which commands such as ``list`` should not pay for.
    """
    from constrained_align.config import ConfigError
    from constrained_align.data import DataError
    from constrained_align.models import BackboneNotFoundError
    from constrained_align.primal_dual import DualUnboundedError

    return (ConfigError, DataError, BackboneNotFoundError, FileNotFoundError, DualUnboundedError)
