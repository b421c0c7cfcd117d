"""Measure each case of ours against its peer in one run and print a table.

Usage::

    python benchmarks/run.py [--quick] [--only NAME ...] [--json FILE] [--repeats N] [--threads N]

``--quick`` runs every case on tiny random models built in code (well under a minute on 2
cores); the full mode uses SmolLM2-135M-Instruct + LoRA and MiniLM score models with 2 torch
threads. Quick mode runs 1 torch thread unless ``--threads`` says otherwise: its tiny
operations gain nothing from a second thread, and on cores shared with other work (a test
suite running beside it) each operation of a 2-thread pool waits milliseconds for the other
thread to be scheduled, which made a quick run minutes long. Each figure is the median of
``--repeats`` timed repeats after one warm-up. The exit status is 1 when a case failed or a
check of numerics (ours against the peer) did not pass, else 0.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import Bench, CaseResult, Settings, machine_info, quiet

CASES = (
    "dpo_step",
    "reference_pass",
    "generation_b16",
    "generation_b64",
    "ppo_step",
    "logprob_memory",
    "scoring",
)


def case_functions() -> dict[str, Callable[[Bench], CaseResult]]:
    """Case name → the function that measures it."""
    from benchmarks import generation, memory, ppo, scoring, training

    return {
        "dpo_step": training.dpo_step,
        "reference_pass": training.reference_pass,
        "generation_b16": generation.generation_b16,
        "generation_b64": generation.generation_b64,
        "ppo_step": ppo.ppo_step,
        "logprob_memory": memory.logprob_memory,
        "scoring": scoring.scoring,
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny models: seconds, not minutes")
    parser.add_argument("--only", nargs="+", choices=CASES, metavar="NAME", help="these cases")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the results here")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (default 5)")
    parser.add_argument(
        "--threads", type=int, help="torch threads (default 2; 1 with --quick, see above)"
    )
    args = parser.parse_args(argv)
    if args.threads is None:
        args.threads = 1 if args.quick else 2
    if args.repeats < 1 or args.threads < 1:
        parser.error("--repeats and --threads must be at least 1")
    return args


def fmt(value: Any) -> str:
    """A number in 4 significant digits (— for none)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return f"{value:.4g}"


def row_line(result: CaseResult) -> list[str]:
    """The table's cells of one result."""
    failed = [k for k, ok in result.checks.items() if not ok]
    checks = "FAILED: " + ", ".join(failed) if failed else "ok" if result.checks else "—"
    return [
        result.name,
        fmt(result.ours),
        fmt(result.peer),
        result.unit,
        fmt(result.advantage),
        fmt(result.share_ours),
        fmt(result.share_peer),
        checks,
    ]


HEADER = [
    "case",
    "ours",
    "peer",
    "unit",
    "ours vs peer (×, >1 = ours better)",
    "bound share ours",
    "bound share peer",
    "checks",
]


def table(rows: list[list[str]]) -> str:
    """Rows under :data:`HEADER`, columns aligned."""
    widths = [max(len(r[i]) for r in [HEADER, *rows]) for i in range(len(HEADER))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [HEADER, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def details_lines(result: CaseResult) -> list[str]:
    """The row's details, one ``key=value`` line per case."""
    items = [f"{k}={fmt(v)}" for k, v in result.details.items() if not isinstance(v, dict)]
    nested = [(k, v) for k, v in result.details.items() if isinstance(v, dict)]
    lines = [f"  {result.name}: " + ", ".join(items)]
    lines += [f"    {k}: " + ", ".join(f"{a}={fmt(b)}" for a, b in v.items()) for k, v in nested]
    return lines


def json_safe(value: Any) -> Any:
    """``value`` with non-finite floats as null (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def run_cases(bench: Bench, names: Sequence[str]) -> tuple[list[CaseResult], dict[str, str]]:
    """Every case in ``names``: their results and, for those that raised, the error."""
    functions = case_functions()
    results, errors = [], {}
    for name in names:
        started = time.perf_counter()
        try:
            result = functions[name](bench)
        except Exception as err:  # one broken case must not hide the others' figures
            traceback.print_exc()
            errors[name] = f"{type(err).__name__}: {err}"
            print(f"{name}: ERROR {errors[name]}", flush=True)
            continue
        result.details["case_seconds"] = time.perf_counter() - started
        results.append(result)
        print(f"{name}: {' | '.join(row_line(result)[1:])}", flush=True)
    return results, errors


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmarks; returns the exit status."""
    args = parse_args(argv)
    quiet()
    import torch

    torch.set_num_threads(args.threads)
    names = [n for n in CASES if not args.only or n in args.only]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ca-bench-") as tmp:
        settings = Settings(args.quick, args.repeats, args.threads, Path(tmp))
        machine = machine_info(settings)
        print("machine: " + ", ".join(f"{k}={v}" for k, v in machine.items()), flush=True)
        results, errors = run_cases(Bench(settings), names)
    rows = [row_line(r) for r in results]
    rows += [[name, "—", "—", "—", "—", "—", "—", f"ERROR {err}"] for name, err in errors.items()]
    print()
    print(table(rows))
    print("details:")
    for result in results:
        print("\n".join(details_lines(result)))
    print(f"total: {time.perf_counter() - started:.1f} s")
    if args.json:
        out: dict[str, Any] = {"_machine": machine}
        out.update({r.name: r.to_json() for r in results})
        out.update({name: {"error": err} for name, err in errors.items()})
        args.json.write_text(json.dumps(json_safe(out), indent=2, allow_nan=False) + "\n")
    failed = [r.name for r in results if not r.passed]
    if failed or errors:
        print(f"FAILED: {', '.join([*failed, *errors])}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
