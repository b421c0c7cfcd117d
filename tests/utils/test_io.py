"""Atomic writes: a failure leaves the previous file whole and no temporary file behind."""

from __future__ import annotations

import json
import math

import pytest

from constrained_align.utils import atomic_path, write_json, write_text


def test_failed_write_keeps_the_old_file(tmp_path) -> None:
    target = write_text(tmp_path / "a.txt", "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_write_json_is_strict_json(tmp_path) -> None:
    path = write_json(tmp_path / "r.json", {"x": math.nan, "y": [1.0, math.inf], "z": "ok"})
    assert json.loads(path.read_text()) == {"x": None, "y": [1.0, None], "z": "ok"}


def test_written_files_get_umask_permissions(tmp_path) -> None:
    import os

    from constrained_align.utils import current_umask

    path = write_text(tmp_path / "p.txt", "x")
    assert path.stat().st_mode & 0o777 == 0o666 & ~current_umask()
    assert os.access(path, os.R_OK)
