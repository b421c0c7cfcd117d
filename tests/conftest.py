"""Fixture locating the real, read-only data in ``shared/data`` beside the repository root."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared() -> Path:
    """``<repo>/../shared/data``."""
    path = (REPO / "../shared/data").resolve()
    if not path.is_dir():
        pytest.skip(f"real data folder {path} not present")
    return path
