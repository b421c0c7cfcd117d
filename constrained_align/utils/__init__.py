"""Small helpers every layer may use (lowest import layer, beside config and types)."""

from constrained_align.utils.io import (
    atomic_path,
    current_umask,
    json_safe,
    save_figure,
    write_json,
    write_text,
)

__all__ = [
    "atomic_path",
    "current_umask",
    "json_safe",
    "save_figure",
    "write_json",
    "write_text",
]
