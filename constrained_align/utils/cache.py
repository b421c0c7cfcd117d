"""A content-addressed cache on disk for generated samples and scores.

A key is the SHA-256 of everything that determines a value (model fingerprints, the inputs, the
settings, the seed), so a rerun of the same run finds its samples and scores and does not
generate or score them again, and a changed input can never be served a stale value. Values are
whatever ``torch.save`` stores; each is written to a temporary file and renamed, so an
interrupted run leaves either a whole entry or none.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from constrained_align.utils.io import UnsafeFileError, atomic_path, load_tensors


def user_cache_dir() -> Path:
    """Where the library keeps what it builds once and reuses across runs (trained comparison
    scorers, SmolLM2 exported from its GGUF file): ``$CONSTRAINED_ALIGN_CACHE``, else
    ``~/.cache/constrained-align``."""
    root = os.environ.get("CONSTRAINED_ALIGN_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "constrained-align"


def content_key(*parts: Any) -> str:
    """SHA-256 hex digest of ``parts`` (JSON-serialisable values, tensors or bytes)."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, torch.Tensor):
            tensor = part.detach().cpu().contiguous()
            digest.update(f"tensor{tuple(tensor.shape)}{tensor.dtype}".encode())
            digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
        elif isinstance(part, bytes):
            digest.update(part)
        else:
            digest.update(json.dumps(part, sort_keys=True, default=str).encode())
        digest.update(b"\x00")
    return digest.hexdigest()


@functools.cache
def code_fingerprint() -> str:
    """Hash of the library's own source files: a run tag that includes it never reuses samples
    that an older version of the training code drew (the version number alone moves too
    rarely for that)."""
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def state_fingerprint(module: torch.nn.Module, *, skip: str | None = None) -> str:
    """Content hash of a module's state dict (names containing ``skip`` left out)."""
    state = {k: v for k, v in module.state_dict().items() if skip is None or skip not in k}
    return content_key(*(state[k] for k in sorted(state)))


class DiskCache:
    """Tensors, strings, numbers (and lists/dicts of them) stored under content keys.

    Args:
        root: the cache folder (created on first write).

    Attributes:
        hits: values served from disk since construction.
        misses: lookups that found nothing.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.hits = 0
        self.misses = 0

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.pt"

    def get(self, key: str) -> Any | None:
        """The stored value, or None."""
        path = self._path(key)
        if not path.is_file():
            self.misses += 1
            return None
        try:
            value = load_tensors(path, what="cache entry")
        except UnsafeFileError as err:  # never read; drawn or scored again and overwritten
            warnings.warn(f"ignored {err}", stacklevel=2)
            self.misses += 1
            return None
        except (OSError, RuntimeError, EOFError):
            # A damaged entry (a crash mid-write on a filesystem without atomic renames) is a
            # miss, and is written again.
            self.misses += 1
            return None
        self.hits += 1
        return value

    def put(self, key: str, value: Any) -> None:
        """Store ``value`` atomically."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            torch.save(value, tmp)
