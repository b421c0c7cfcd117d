"""Strict, documented dataclass configs: YAML in, dotted overrides, YAML out.

Every config is a (nested) dataclass whose fields are declared with :func:`param`, which keeps
a one-line doc per field. Loading is strict: an unknown key fails with the key's dotted path, the
file it came from and the closest valid key; a value of the wrong type fails the same way.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

from constrained_align.config.checks import Check, ConfigError, validate

T = TypeVar("T")


def param(
    default: Any = dataclasses.MISSING, doc: str = "", *, check: Check | None = None, **kwargs: Any
) -> Any:
    """A dataclass field with a documentation line (shown by ``show-config``) and, for numbers,
    the range its values must lie in (:mod:`.checks`, checked on load and on ``--set``).

    Mutable defaults (dataclass instances, lists, dicts) are wrapped in a factory.
    """
    metadata = {"doc": doc, "check": check}
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata=metadata, **kwargs)
    if dataclasses.is_dataclass(default) or isinstance(default, list | dict):
        value = default
        return dataclasses.field(default_factory=lambda: _copy(value), metadata=metadata, **kwargs)
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


def _copy(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return dataclasses.replace(
            value, **{f.name: _copy(getattr(value, f.name)) for f in dataclasses.fields(value)}
        )
    if isinstance(value, list):
        return [_copy(v) for v in value]
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    return value


def field_docs(cls: type) -> dict[str, str]:
    """Field name → documentation line of a config dataclass (with its range, if any)."""
    docs = {}
    for f in dataclasses.fields(cls):
        check = f.metadata.get("check")
        doc = f.metadata.get("doc", "")
        docs[f.name] = f"{doc} [{check}]" if check is not None and doc else doc
    return docs


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _where(path: str, source: str | None) -> str:
    return f"'{path}'" + (f" in {source}" if source else "")


def coerce(value: Any, hint: Any, path: str, source: str | None = None) -> Any:
    """Check ``value`` against the type ``hint`` (converting int → float, str → Path)."""
    origin = get_origin(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        options = get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return coerce(value, option, path, source)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(
            errors[0]
            if len(errors) == 1
            else f"{_where(path, source)}: {value!r} matches none of {hint}"
        )
    if origin is Literal:
        choices = get_args(hint)
        if value not in choices:
            close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
            hint_text = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"{_where(path, source)}: {value!r} is not one of {list(choices)}{hint_text}"
            )
        return value
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{_where(path, source)}: expected a list, got {value!r}")
        (item,) = get_args(hint)[:1] or (Any,)
        return [coerce(v, item, f"{path}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{_where(path, source)}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{_where(path, source)}: expected a mapping, got {value!r}")
        return from_dict(hint, value, source=source, prefix=path)
    return _coerce_scalar(value, hint, path, source)


def _coerce_scalar(value: Any, hint: Any, path: str, source: str | None) -> Any:
    """Check a scalar against float, int, bool, str or Path (int → float allowed)."""
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{_where(path, source)}: expected a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{_where(path, source)}: expected an integer, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{_where(path, source)}: expected true/false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{_where(path, source)}: expected a string, got {value!r}")
        return value
    if hint is Path:
        return Path(value)
    return value


def from_dict(
    cls: type[T], data: Mapping[str, Any], *, source: str | None = None, prefix: str = ""
) -> T:
    """Build the dataclass ``cls`` from a mapping, rejecting unknown keys.

    Args:
        cls: the config dataclass.
        data: parsed YAML.
        source: file name for error messages.
        prefix: dotted path of ``data`` inside the whole config.

    Raises:
        ConfigError: naming the key, the file and the closest valid key.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{_where(prefix or '<root>', source)}: expected a mapping")
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    defaults = {
        f.name: f.default_factory()
        for f in dataclasses.fields(cls)
        if f.default_factory is not dataclasses.MISSING
    }
    kwargs = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.5)
            suggestion = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(
                f"unknown key {_where(path, source)}{suggestion} "
                f"(valid keys here: {', '.join(names)})"
            )
        default = defaults.get(key)
        if dataclasses.is_dataclass(default) and isinstance(value, Mapping):
            # A partial section keeps the owner's defaults for what it leaves out (ppo_lag's
            # `dual:` stays log_sgd when a YAML only sets cost_limit).
            value = merge_mappings(to_dict(default), value)
        kwargs[key] = coerce(value, hints[key], path, source)
    missing = [
        f.name
        for f in dataclasses.fields(cls)
        if f.name not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        where = f" in {source}" if source else ""
        raise ConfigError(f"missing required key(s) {missing} under '{prefix or '<root>'}'{where}")
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{_where(prefix or '<root>', source)}: {err}") from err
    if not prefix:
        validate(obj, source=source)
    return obj


def merge_mappings(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``top``, recursing into nested mappings."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = merge_mappings(out[key], value)
        else:
            out[key] = value
    return out


def to_dict(obj: Any) -> Any:
    """Plain dict/list/scalar form of a config (Paths become strings)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list | tuple):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a mapping that names a key twice (YAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key!r} appears twice (lines {seen[key]} and "
                    f"{key_node.start_mark.line + 1})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with the file name in every error (a key named twice is one)."""
    path = Path(path)
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except FileNotFoundError as err:
        raise ConfigError(f"config file not found: {path}") from err
    except IsADirectoryError as err:
        raise ConfigError(f"{path} is a folder, not a YAML file") from err
    except yaml.MarkedYAMLError as err:
        line = f", line {err.problem_mark.line + 1}" if err.problem_mark else ""
        raise ConfigError(f"{path}{line}: not valid YAML: {err.problem}") from err
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(err).split())}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    return data


def leaf_paths(obj: Any, prefix: str = "") -> list[str]:
    """Dotted paths of every non-dataclass field of a nested config."""
    paths = []
    for f in dataclasses.fields(obj):
        path = f"{prefix}.{f.name}" if prefix else f.name
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            paths.extend(leaf_paths(value, path))
        else:
            paths.append(path)
    return paths


def resolve_key(obj: Any, key: str) -> str:
    """Full dotted path for ``key``: itself, or the unique leaf path ending in ``.key``.

    ``--set cost_limit=-0.5`` therefore works whatever the nesting, while an ambiguous short
    name fails and lists the full paths to choose from.
    """
    paths = leaf_paths(obj)
    if key in paths:
        return key
    matches = [p for p in paths if p.endswith("." + key)]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise ConfigError(f"override '{key}' is ambiguous; use one of: {', '.join(matches)}")
    names = sorted({p.rsplit(".", 1)[-1] for p in paths} | set(paths))
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.5)
    suggestion = f"; did you mean '{close[0]}'?" if close else ""
    raise ConfigError(f"unknown override key '{key}'{suggestion}")


def apply_overrides(obj: T, overrides: Mapping[str, Any] | list[str]) -> T:
    """Set values by dotted path (or unique leaf name) in place and return ``obj``.

    Args:
        obj: a config dataclass instance.
        overrides: ``{"train.beta": 0.2}`` or command-line strings ``["beta=0.2"]``; string
            values are parsed as YAML scalars, then checked against the field's type.
    """
    items = overrides.items() if isinstance(overrides, Mapping) else map(split_override, overrides)
    for key, value in items:
        path = resolve_key(obj, key)
        if path in getattr(obj, "FIXED_ON_LOAD", ()):
            raise ConfigError(
                f"'{path}' decides the config's type: set it when the config is read "
                f"(train and show-config apply --set {path}=... before reading the file)"
            )
        *parents, name = path.split(".")
        target = obj
        for part in parents:
            target = getattr(target, part)
        hint = _hints(type(target))[name]
        setattr(target, name, coerce(value, hint, path, "--set"))
    validate(obj, source="--set")
    return obj


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+")


def split_override(text: str) -> tuple[str, Any]:
    """``"key=value"`` → ``(key, value)``, the value parsed as a YAML scalar."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        value = float(value)  # YAML 1.1 reads 3e-4 (no dot) as a string; here it is a number
    return key.strip(), value


def dump_yaml(obj: Any, *, with_docs: bool = True) -> str:
    """YAML text of a config, each field preceded by its documentation as a comment."""
    lines: list[str] = []
    _dump(obj, 0, lines, with_docs)
    return "\n".join(lines) + "\n"


def _dump(obj: Any, indent: int, lines: list[str], with_docs: bool) -> None:
    docs = field_docs(type(obj))
    pad = "  " * indent
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if with_docs and docs.get(f.name):
            lines.append(f"{pad}# {docs[f.name]}")
        if dataclasses.is_dataclass(value):
            lines.append(f"{pad}{f.name}:")
            _dump(value, indent + 1, lines, with_docs)
        else:
            text = yaml.safe_dump(to_dict(value), default_flow_style=True).strip()
            text = text.removesuffix("\n...").removesuffix("...").strip()
            lines.append(f"{pad}{f.name}: {text}")
