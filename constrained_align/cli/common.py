"""What every sub-command shares: one-line errors for mistakes a user can fix."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Mapping
from typing import Any


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


def number(value: Any, spec: str = "+.3f") -> str:
    """A figure for the terminal: ``—`` for a missing or NaN value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return format(value, spec) if isinstance(value, int | float) else str(value)


def metrics_line(ev: Mapping[str, Any], *, kl: bool = False) -> str:
    """One evaluation's headline figures (:mod:`constrained_align.eval.policy`) on one line."""
    line = (
        f"reward {number(ev['reward'])}  cost {number(ev['cost'])}  "
        f"harmful {number(ev['harmful_ratio'], '.3f')}  "
        f"over-refusal {number(ev['over_refusal'], '.3f')}"
    )
    return line + (f"  KL {number(ev['kl'], '.4g')}" if kl else "")
