"""What a reported figure was measured with: package versions and the machine."""

from __future__ import annotations

import os
import platform
from typing import Any

#: The packages whose versions shape the library's numbers.
PACKAGES = ("constrained-align", "torch", "transformers", "peft", "trl", "datasets", "numpy")


def versions() -> dict[str, str]:
    """Versions of the library, the packages that shape its numbers, and Python."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    out["python"] = platform.python_version()
    return out


def machine() -> dict[str, Any]:
    """The processor, CPU count, torch threads and GPU of this process."""
    import torch

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
