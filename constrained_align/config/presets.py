"""The one preset lookup: ``c_dpo:tiny`` → ``algorithms/c_dpo/tiny.yaml``, ``compare:default`` →
the comparison presets, or a plain YAML path.

Algorithm presets live at the repository's top level (``algorithms/<key>/``) next to each
algorithm's card; a wheel carries them inside the package as ``constrained_align/_presets``,
and an editable or source checkout reads them from the repository (package first). The
comparison presets ship inside the package (``constrained_align/apps/presets``).
"""

from __future__ import annotations

from pathlib import Path

from constrained_align.config.core import ConfigError

_PACKAGE = Path(__file__).resolve().parents[1]
#: The namespace of the comparison presets (``compare:default``, ``compare:tiny``).
COMPARE = "compare"


def presets_root() -> Path:
    """The folder holding ``<key>/tiny.yaml`` and ``<key>/paper.yaml``."""
    for candidate in (_PACKAGE / "_presets", _PACKAGE.parent / "algorithms"):
        if candidate.is_dir():
            return candidate
    raise ConfigError("no preset folder found (expected constrained_align/_presets or algorithms/)")


def compare_presets_root() -> Path:
    """The folder of the comparison presets."""
    return _PACKAGE / "apps" / "presets"


def preset_path(spec: str | Path) -> Path:
    """Path of a preset given as ``key:name`` (``compare:name`` for comparisons) or a YAML path.

    Raises:
        ConfigError: a missing file, or an unknown key or preset name (listing the known ones).
    """
    text = str(spec)
    path = Path(text)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        return path
    if ":" not in text:
        raise ConfigError(f"'{text}' is neither a YAML file nor a preset like 'c_dpo:tiny'")
    key, name = text.split(":", 1)
    folder = compare_presets_root() if key == COMPARE else presets_root() / key
    found = folder / f"{name}.yaml"
    if found.is_file():
        return found
    if key != COMPARE and not folder.is_dir():
        keys = sorted(p.name for p in presets_root().iterdir() if p.is_dir())
        raise ConfigError(f"no algorithm '{key}' with presets; known: {', '.join(keys)}")
    names = sorted(p.stem for p in folder.glob("*.yaml"))
    raise ConfigError(f"no preset '{name}' for '{key}'; available: {', '.join(names)}")
