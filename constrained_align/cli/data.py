"""``constrained-align data check FILE``: validate a data file and list its invalid rows."""

from __future__ import annotations

import argparse
import sys


def _cmd_data_check(args: argparse.Namespace) -> int:
    # Lazy import: `datasets` is slow to import and only this command needs it.
    from constrained_align.data import DataError, check_file, format_report

    try:
        columns = dict(item.split("=", 1) for item in args.columns)
    except ValueError:
        print(
            f"constrained-align: error: --columns takes canon=filecol, got {args.columns}",
            file=sys.stderr,
        )
        return 2
    try:
        report = check_file(args.file, columns=columns, fmt=args.format)
    except DataError as err:
        print(f"constrained-align: error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    print(format_report(report))
    problem = report.problem(skip_invalid=args.skip_invalid)  # what train would decide
    if problem is None and report.errors:
        print(f"--skip-invalid: the {report.invalid_rows} invalid rows would be dropped on load")
    if problem is not None and report.valid_rows == 0:
        print(f"constrained-align: error: {problem}", file=sys.stderr)
    return 1 if problem is not None else 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``data check``."""
    data = sub.add_parser("data", help="data tools").add_subparsers(
        dest="data_command", required=True
    )
    p = data.add_parser("check", help="validate a data file and list its invalid rows")
    p.add_argument("file", help="json, jsonl(.gz), parquet or csv file")
    p.add_argument(
        "--columns",
        nargs="+",
        action="extend",
        default=[],
        metavar="CANON=FILECOL",
        help="map canonical field names to the file's columns, e.g. prompt=question",
    )
    p.add_argument(
        "--format",
        choices=["auto", "pairs", "hh-rlhf", "pku", "chosen-rejected"],
        default="auto",
        help="how to read the file (default: detect from its columns)",
    )
    p.add_argument(
        "--skip-invalid",
        action="store_true",
        help="exit 0 when the file loads with invalid rows dropped",
    )
    p.set_defaults(func=_cmd_data_check)
