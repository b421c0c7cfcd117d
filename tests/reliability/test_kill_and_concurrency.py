"""A run killed at a (seeded) random point and resumed ends with the same figures as a straight
one — for ``train`` (``--resume``) and for ``compare`` (rerun the same command); and two runs
into one folder: one runs, the other is refused at once."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from constrained_align.cli import main
from tests.reliability.helpers import assert_one_line_error

POINTS = random.Random(20261203)  # the seeded "random point" of each kill


def launch(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    """``constrained-align ARGS`` in a new process."""
    return subprocess.Popen(
        [sys.executable, "-m", "constrained_align", *args],
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.is_file() else 0


def kill_after(proc: subprocess.Popen, metrics: Path, records: int, timeout: float = 300) -> None:
    """SIGKILL the process once ``metrics`` holds ``records`` lines (as a crash would)."""
    deadline = time.monotonic() + timeout
    while lines(metrics) < records:
        assert proc.poll() is None, f"the run ended before record {records}: {proc.stderr.read()}"
        assert time.monotonic() < deadline, "timed out waiting for the run"
        time.sleep(0.02)
    proc.kill()
    proc.wait()


def untimed(folder: Path) -> list[dict]:
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return [
        {k: v for k, v in r.items() if not k.startswith(("time/", "tokens/s"))} for r in records
    ]


def adapter(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "final" / "adapter_model.safetensors")


def test_train_killed_at_a_random_record_resumes_to_the_same_figures(tmp_path):
    sets = ["--set", "rounds=3", "--set", "tol=0", "--set", "epochs=2"]  # 6 records
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert main(["train", "c_dpo:tiny", *sets, "--output-dir", str(straight), "--quiet"]) == 0
    point = POINTS.randint(1, 5)
    proc = launch(["train", "c_dpo:tiny", *sets, "--output-dir", str(killed), "--quiet"])
    kill_after(proc, killed / "metrics.jsonl", point)
    args = ["train", "c_dpo:tiny", *sets, "--output-dir", str(killed), "--quiet", "--resume"]
    assert main(args) == 0, f"resume after a kill at record {point}"
    assert untimed(killed) == untimed(straight)
    a, b = adapter(straight), adapter(killed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    s1, s2 = (json.loads((f / "summary.json").read_text()) for f in (straight, killed))
    assert s1["lambda_trajectory"] == s2["lambda_trajectory"] and s1["after"] == s2["after"]


def figures(folder: Path) -> list[dict]:
    results = json.loads((folder / "results.json").read_text())
    return [
        {
            "name": m["name"],
            "lambda": m["lambda"],
            "trajectory": m["lambda_trajectory"],
            "eval": {
                mode: {k: v for k, v in e.items() if k != "seconds"}
                for mode, e in m["eval"].items()
            },
            "scores": m["scores"],
            "examples": m["examples"],
        }
        for m in results["models"]
    ]


def test_compare_killed_at_a_random_point_reruns_to_the_same_report(tmp_path, monkeypatch):
    cache = tmp_path / "user-cache"
    monkeypatch.setenv("CONSTRAINED_ALIGN_CACHE", str(cache))
    base = [
        "compare",
        "--preset",
        "tiny",
        "--quiet",
        "--algorithms",
        "reference",
        "c_dpo",
        "ppo_lag",
    ]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert main([*base, "--output-dir", str(straight)]) == 0
    point = POINTS.randint(1, 5)  # ppo_lag's tiny preset logs 6 records
    proc = launch([*base, "--output-dir", str(killed)], {"CONSTRAINED_ALIGN_CACHE": str(cache)})
    kill_after(proc, killed / "runs" / "ppo_lag" / "metrics.jsonl", point)
    assert main([*base, "--output-dir", str(killed)]) == 0, f"rerun after a kill at {point}"
    assert figures(killed) == figures(straight)
    for key in ("c_dpo", "ppo_lag"):
        assert untimed(killed / "runs" / key) == untimed(straight / "runs" / key)


def test_two_runs_into_one_folder_one_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "ppo_lag:tiny", "--output-dir", str(out), "--quiet"]
    first = launch(args)
    deadline = time.monotonic() + 120
    while not ((out / ".lock").is_file() and (out / ".lock").read_text().strip()):
        assert first.poll() is None, first.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert main(args) == 2
    assert_one_line_error(capsys.readouterr().err, "is in use by another run", "process")
    assert first.wait(timeout=300) == 0, first.stderr.read()
    assert lines(out / "metrics.jsonl") == 6  # the first run's records only, once each
