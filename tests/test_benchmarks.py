"""``benchmarks/run.py --quick`` runs every case and reports each one: its row in the printed
table and in the JSON file, with finite figures and the documented keys. Timings themselves
are never asserted (they depend on the machine and its load)."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.run import CASES

ROOT = Path(__file__).resolve().parents[1]
KEYS = {
    "ours",
    "peer",
    "ratio",
    "unit",
    "higher_is_better",
    "bound_share_ours",
    "bound_share_peer",
    "details",
}
MACHINE_KEYS = {"cpu", "cores", "torch_threads", "torch", "transformers", "trl"}


def finite(value: Any) -> bool:
    """A real number that is neither NaN nor infinite (booleans are not figures)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_row(name: str, row: dict[str, Any]) -> None:
    """One case's JSON row: the documented keys, finite figures, every check passed."""
    assert set(row) >= KEYS, f"{name}: missing {KEYS - set(row)}"
    assert finite(row["ours"]) and row["ours"] > 0, f"{name}: ours = {row['ours']}"
    assert finite(row["bound_share_ours"]), f"{name}: bound_share_ours = {row['bound_share_ours']}"
    assert isinstance(row["unit"], str) and row["unit"], name
    assert isinstance(row["higher_is_better"], bool), name
    assert isinstance(row["details"], dict), name
    if row["peer"] is None:  # a skipped peer says why, and has no ratio
        assert row["details"].get("note"), f"{name}: peer skipped without a note"
        assert row["ratio"] is None and row["bound_share_peer"] is None, name
    else:
        assert finite(row["peer"]) and row["peer"] > 0, f"{name}: peer = {row['peer']}"
        assert finite(row["ratio"]), f"{name}: ratio = {row['ratio']}"
        assert math.isclose(row["ratio"], row["ours"] / row["peer"], rel_tol=1e-9), name
        assert finite(row["bound_share_peer"]), f"{name}: bound_share_peer"
    checks = row["details"].get("checks", {})
    assert all(checks.values()), f"{name}: failed checks {checks}"


def test_quick_run_reports_every_case(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, "benchmarks/run.py", "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    log = f"stdout:\n{done.stdout[-6000:]}\nstderr:\n{done.stderr[-6000:]}"
    assert done.returncode == 0, log
    assert done.stdout.startswith("machine: "), log
    for name in CASES:
        assert re.search(rf"^{name}\s", done.stdout, re.MULTILINE), f"no table row for {name}"
    results = json.loads(out.read_text())
    assert set(results) == {*CASES, "_machine"}, sorted(results)
    assert set(results["_machine"]) >= MACHINE_KEYS, results["_machine"]
    for name in CASES:
        check_row(name, results[name])
