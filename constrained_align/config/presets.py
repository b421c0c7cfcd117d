"""Find preset files: ``c_dpo:tiny`` → ``algorithms/c_dpo/tiny.yaml``, or a plain path.

The presets live at the repository's top level (``algorithms/<key>/``) next to each algorithm's
card. A wheel carries them inside the package as ``constrained_align/_presets``; an editable or
source checkout reads them from the repository. Both locations are looked up, package first.
"""

from __future__ import annotations

from pathlib import Path

from constrained_align.config.core import ConfigError

_PACKAGE = Path(__file__).resolve().parents[1]


def presets_root() -> Path:
    """The folder holding ``<key>/tiny.yaml`` and ``<key>/paper.yaml``."""
    for candidate in (_PACKAGE / "_presets", _PACKAGE.parent / "algorithms"):
        if candidate.is_dir():
            return candidate
    raise ConfigError("no preset folder found (expected constrained_align/_presets or algorithms/)")


def preset_path(spec: str | Path) -> Path:
    """Path of a preset given as ``key:name`` or as a YAML path."""
    text = str(spec)
    path = Path(text)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        return path
    if ":" not in text:
        raise ConfigError(f"'{text}' is neither a YAML file nor a preset like 'c_dpo:tiny'")
    key, name = text.split(":", 1)
    root = presets_root()
    found = root / key / f"{name}.yaml"
    if not found.is_file():
        keys = sorted(p.name for p in root.iterdir() if p.is_dir())
        if key not in keys:
            raise ConfigError(f"no algorithm '{key}' with presets; known: {', '.join(keys)}")
        names = sorted(p.stem for p in (root / key).glob("*.yaml"))
        raise ConfigError(f"no preset '{name}' for '{key}'; available: {', '.join(names)}")
    return found
