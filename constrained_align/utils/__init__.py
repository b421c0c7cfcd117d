"""Helpers every layer may use (the lowest import layer, beside config and types): atomic file
writes (:mod:`.io`), the content-addressed disk cache of samples and scores (:mod:`.cache`),
the cross-process reductions of data-parallel runs (:mod:`.distributed`) and the versions and
machine a figure was measured on (:mod:`.env`)."""

from constrained_align.utils.io import (
    UnsafeFileError,
    atomic_path,
    current_umask,
    json_safe,
    load_tensors,
    save_figure,
    write_json,
    write_text,
)

__all__ = [
    "UnsafeFileError",
    "atomic_path",
    "current_umask",
    "json_safe",
    "load_tensors",
    "save_figure",
    "write_json",
    "write_text",
]
