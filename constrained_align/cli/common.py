"""What every sub-command shares: the error boundary, ``--set``, and how figures print.

**Exit codes** of every command: 0 done; 1 a run failed (training diverged, or took no
optimizer step; ``summary.json`` says where); 2 bad input (config, data, model folder, run
folder, a refused file), with one line naming what and where; 3 a bug in the library, with its
traceback and a request to report it; 130 interrupted (Ctrl-C).
"""

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


EXIT_FAILED_RUN = 1
EXIT_BAD_INPUT = 2
EXIT_BUG = 3
EXIT_INTERRUPTED = 130


def fail(message: object, code: int = EXIT_BAD_INPUT) -> int:
    """Print ``constrained-align: error: <message>`` to stderr (its further lines indented:
    a data file's row errors); return ``code``."""
    text = str(message).strip().splitlines()
    print(f"constrained-align: error: {text[0] if text else message}", file=sys.stderr)
    for line in text[1:]:
        print(f"  {line}", file=sys.stderr)
    return code


def user_error_types() -> tuple[type[BaseException], ...]:
    """Errors that mean bad input (config, data, a missing or refused model or file), not a
    bug in the library.

    Imported on demand: the data and model layers pull in ``datasets`` and ``transformers``,
    which commands such as ``list`` should not pay for.
    """
    from constrained_align.config import ConfigError
    from constrained_align.data import DataError
    from constrained_align.models import BackboneNotFoundError, RemoteCodeError
    from constrained_align.primal_dual import DualUnboundedError
    from constrained_align.utils import UnsafeFileError

    return (
        ConfigError,
        DataError,
        BackboneNotFoundError,
        FileNotFoundError,
        DualUnboundedError,
        RemoteCodeError,
        UnsafeFileError,
    )


def run_guarded(command: Any, args: argparse.Namespace) -> int:
    """Run a sub-command inside the error boundary (see the module docstring)."""
    from constrained_align.types import TrainingError

    try:
        return command(args)
    except TrainingError as err:
        return fail(err, EXIT_FAILED_RUN)
    except Exception as err:
        if isinstance(err, user_error_types()):
            return fail(err)
        import traceback

        traceback.print_exc()
        print(
            "constrained-align: internal error: this is a bug in the library, not in your input; "
            "please report it to the maintainers with the command and the traceback above",
            file=sys.stderr,
        )
        return EXIT_BUG


def quiet_dependencies() -> None:
    """Keep the warnings and log lines of the libraries we build on, which a user cannot act
    on, out of the terminal (the library's own warnings still show)."""
    import os
    import warnings

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    if "transformers" in sys.modules:  # imported already: the variable above came too late
        sys.modules["transformers"].logging.set_verbosity_error()
    deps = r"(torch|transformers|peft|accelerate|datasets|trl|huggingface_hub|tokenizers)(\.|$)"
    warnings.filterwarnings("ignore", module=deps)


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
    if "judge_harmful_ratio" in ev:  # judged by independent models beside the proxies
        line += (
            f"  judged reward {number(ev['judge_reward'])}  "
            f"judged harmful {number(ev['judge_harmful_ratio'], '.3f')}"
        )
    return line + (f"  KL {number(ev['kl'], '.4g')}" if kl else "")
