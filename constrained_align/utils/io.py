"""Writing files so that a crash never leaves a half-written one where a complete one was, and
reading tensor files so that nothing in them can run.

Everything is written to a temporary file in the destination folder and renamed into place
(``os.replace`` is atomic on POSIX within one file system). Tensor files (checkpoints, the
sample cache) are read with ``torch.load(weights_only=True)``, which rebuilds tensors and plain
containers only: a file that holds any other Python object — the way a shared run folder could
carry code — is refused, and nothing in it runs.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    On an exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as f:  # on disk before the rename: a crash leaves old or new
            os.fsync(f.fileno())
        # mkstemp creates the file private (0600); give it the permissions open() would have.
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


class UnsafeFileError(ValueError):
    """A file the library reads holds something other than tensors and plain data."""


def load_tensors(path: str | Path, *, what: str) -> Any:
    """The content of a tensor file written by ``torch.save``, loaded without running code.

    Args:
        path: the file.
        what: what the file is, for the error message ("checkpoint", ...).

    Raises:
        UnsafeFileError: the file holds Python objects other than tensors, numbers, strings,
            lists, tuples and dicts (it is refused unread).
        RuntimeError, EOFError: the file is damaged or not a tensor file.
    """
    import pickle

    import torch

    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as err:
        raise UnsafeFileError(
            f"{path}: refused to read this {what}: it holds Python objects other than tensors "
            "and plain data, which could run code; the library never writes such files"
        ) from err


def current_umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 text atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def json_safe(value: Any) -> Any:
    """NaN and infinities become None: strict JSON has no spelling for them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented strict JSON (NaN → null) atomically."""
    return write_text(path, json.dumps(json_safe(obj), indent=2, allow_nan=False) + "\n")


def save_figure(fig: Any, path: str | Path, *, dpi: int = 120) -> Path:
    """Save a matplotlib figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    return Path(path)
