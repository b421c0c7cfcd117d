"""What every fault-and-fuzz test checks: the exit code, one error line that names what is
wrong, and that nothing outside the run's own folder was written."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from constrained_align.cli import main

GOOD_PAIR = {
    "prompt": "How do I bake bread?",
    "response_0": "Mix flour, water, salt and yeast, knead, let it rise, then bake it.",
    "response_1": "No idea.",
    "better_response_id": 0,
    "safer_response_id": 0,
    "is_response_0_safe": True,
    "is_response_1_safe": True,
}


def snapshot(root: Path, *, skip: Path | None = None) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` (except under ``skip``) with its size and modification time."""
    out = {}
    for path in root.rglob("*"):
        if skip is not None and (path == skip or skip in path.parents):
            continue
        if path.is_file():
            stat = path.stat()
            out[str(path)] = (stat.st_size, stat.st_mtime_ns)
    return out


def run_cli(args: list[str], capsys, root: Path, *, own: Path | None = None) -> tuple[int, str]:
    """Run the command; check that nothing under ``root`` outside ``own`` changed; return the
    exit code and stderr."""
    before = snapshot(root, skip=own)
    code = main(args)
    err = capsys.readouterr().err
    assert snapshot(root, skip=own) == before, "files outside the run's own folder changed"
    return code, err


def visible_lines(text: str) -> list[str]:
    """The lines a terminal shows: a carriage return (a progress bar clearing its line) lets
    what follows overwrite what came before."""
    shown = (line.rsplit("\r", 1)[-1] for line in text.split("\n"))
    return [line for line in shown if line.strip()]


def assert_one_line_error(err: str, *needles: str) -> None:
    """stderr shows one ``constrained-align: error:`` line holding every needle."""
    lines = visible_lines(err)
    assert len(lines) == 1, f"expected one line, got:\n{err}"
    assert lines[0].startswith("constrained-align: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"


def write_jsonl(path: Path, rows: list[dict] | None = None, *, raw: str | bytes | None = None):
    """A pairs file: rows as JSON lines, or raw text/bytes."""
    if raw is not None:
        (path.write_bytes if isinstance(raw, bytes) else path.write_text)(raw)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows or []))
    return path


class Planted:
    """A pickle that runs a command when unpickled: it touches ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def plant_pickle(path: Path, marker: Path) -> None:
    """Write a torch file whose unpickling would run code (touch ``marker``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"records": [Planted(marker)], "payload": torch.zeros(1)}, path)
