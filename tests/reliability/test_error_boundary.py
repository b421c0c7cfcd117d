"""One error boundary: expected errors are one line with a documented exit code (2 bad input,
1 a failed run); only a bug shows a traceback, with a request to report it; the dependencies'
warnings are never what a user reads last."""

from __future__ import annotations

import subprocess
import sys

from constrained_align.cli import main
from constrained_align.cli.common import EXIT_BUG
from tests.reliability.helpers import visible_lines


def cli(*args: str) -> subprocess.CompletedProcess:
    """Run the command; its stderr as the bytes decoded (no newline translation: a progress
    bar's carriage returns stay what they are)."""
    done = subprocess.run([sys.executable, "-m", "constrained_align", *args], capture_output=True)
    done.stderr = done.stderr.decode("utf-8")
    return done


def test_bad_input_in_a_fresh_process_is_exactly_one_line(tmp_path):
    done = cli("train", "mocan:tiny", "--set", "cost_limit=-5", "--output-dir", str(tmp_path / "o"))
    assert done.returncode == 2
    lines = visible_lines(done.stderr)
    assert len(lines) == 1 and lines[0].startswith("constrained-align: error: the one-shot dual")


def test_failed_run_in_a_fresh_process_ends_with_its_error(tmp_path):
    done = cli("train", "dpo:tiny", "--set", "beta=1e30", "--quiet", "--output-dir", str(tmp_path))
    assert done.returncode == 1
    assert visible_lines(done.stderr)[-1].startswith("constrained-align: error: step 1:")


def test_a_bug_shows_its_traceback_and_asks_for_a_report(monkeypatch, capsys):
    import constrained_align.cli as cli_module

    def broken(args):
        raise RuntimeError("an internal invariant broke")

    monkeypatch.setattr(cli_module, "_cmd_list", broken)
    assert main(["list"]) == EXIT_BUG
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError: an internal invariant broke" in err
    assert err.strip().splitlines()[-1].startswith("constrained-align: internal error:")
    assert "report it" in err
