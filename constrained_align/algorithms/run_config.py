"""Reading a run config: a preset (``c_dpo:tiny``) or a YAML file → a typed run config.

The file names its registry key (``algorithm``) and backend (``backend: causal_lm``; the
closed-form ``testbed`` when absent); the key's run config class for that backend
(:meth:`~constrained_align.algorithms.registry.AlgorithmSpec.run_config_class`) reads the
whole file strictly, its ``train`` section included. A file may start from another preset of
the same key with ``base: <preset name>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from constrained_align.algorithms.registry import get
from constrained_align.config import (
    ConfigError,
    RunConfig,
    apply_overrides,
    from_dict,
    load_yaml,
    merge_mappings,
    preset_path,
    split_override,
)


def load_run_config(
    spec: str | Path,
    overrides: Mapping[str, Any] | list[str] | None = None,
    *,
    merge: Mapping[str, Any] | None = None,
) -> RunConfig:
    """The run config of a preset (``key:name``) or YAML path, with overrides applied.

    Args:
        spec: ``c_dpo:tiny`` or a YAML file.
        overrides: ``--set`` items (``["beta=0.2"]``) or a mapping of dotted paths (or unique
            leaf names) to values, applied last.
        merge: YAML-shaped sections (e.g. a comparison's shared ``model:`` and ``data:``)
            merged over the file before the overrides.

    Raises:
        ConfigError: a missing file or ``algorithm``, an unknown key or backend, or a value of
            the wrong type (naming the key, the file and the closest valid key).
    """
    path = preset_path(spec)
    data = _with_base(path)
    if merge:
        data = merge_mappings(data, merge)
    items = dict(
        overrides.items()
        if isinstance(overrides, Mapping)
        else map(split_override, overrides or [])
    )
    for name in RunConfig.FIXED_ON_LOAD:  # they decide the type: applied before reading
        if name in items:
            data[name] = items.pop(name)
    key = data.get("algorithm")
    if not isinstance(key, str):
        found = "missing" if key is None else f"{key!r}, not a registry key"
        raise ConfigError(f"{path}: 'algorithm' is {found} (see `constrained-align list`)")
    backend = data.get("backend", "testbed")
    if not isinstance(backend, str):
        raise ConfigError(f"{path}: 'backend' must be testbed or causal_lm, got {backend!r}")
    config = from_dict(get(key).run_config_class(backend), data, source=str(path))
    if items:
        apply_overrides(config, items)
    return config


def _with_base(path: Path) -> dict[str, Any]:
    data = load_yaml(path)
    base = data.pop("base", None)
    if base is None:
        return data
    merged = _with_base(path.parent / f"{base}.yaml")
    return merge_mappings(merged, data)
