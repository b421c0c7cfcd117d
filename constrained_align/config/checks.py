"""Ranges of config values, checked whenever a config is loaded or overridden.

A field declares its range with ``param(..., check=POSITIVE)``; :func:`validate` walks a whole
config, checks every field against its range, refuses non-finite numbers everywhere (no
setting of the library means anything at NaN or infinity), and calls a section's own
``check_fields()`` for rules that involve several fields. Every message names the field, the
value and the range.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any


class ConfigError(ValueError):
    """A config could not be read: unknown key, wrong type, bad value or bad override."""


@dataclass(frozen=True)
class Range:
    """Numbers between ``low`` and ``high`` (either end open or closed, either optional)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def admits(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (
            self.high is not None and (value >= self.high if self.high_open else value > self.high)
        )

    def __str__(self) -> str:
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"in {left}{self.low:g}, {self.high:g}{right}"
        if self.low is not None:
            return f"> {self.low:g}" if self.low_open else f"at least {self.low:g}"
        return f"< {self.high:g}" if self.high_open else f"at most {self.high:g}"


@dataclass(frozen=True)
class NotEqual:
    """Any number but ``value``."""

    value: float

    def admits(self, value: float) -> bool:
        return value != self.value

    def __str__(self) -> str:
        return f"≠ {self.value:g}"


Check = Range | NotEqual

POSITIVE = Range(low=0.0, low_open=True)
NON_NEGATIVE = Range(low=0.0)
AT_LEAST_1 = Range(low=1)
UNIT = Range(0.0, 1.0)
OPEN_UNIT = Range(0.0, 1.0, low_open=True, high_open=True)
PROBABILITY_MASS = Range(0.0, 1.0, low_open=True)  # (0, 1]
FRACTION = Range(0.0, 1.0, high_open=True)  # [0, 1)
TWO_OR_MORE = Range(low=2)
#: An optimizer step moves each weight by about lr (Adam): above 10 nothing trains.
LEARNING_RATE = Range(0.0, 10.0, low_open=True)
MIN_LENGTH = Range(low=8)  # tokens: room for a prompt, a response and the special tokens
NOT_ONE = NotEqual(1.0)


def _problem(path: str, source: str | None, text: str) -> str:
    return f"{path} {text}" + (f" ({source})" if source else "")


def validate(obj: Any, *, source: str | None = None, prefix: str = "") -> None:
    """Check every field of the config ``obj`` (recursively) against its declared range.

    Raises:
        ConfigError: naming the first field whose value is out of range or not finite.
    """
    for f in dataclasses.fields(obj):
        path = f"{prefix}.{f.name}" if prefix else f.name
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            validate(value, source=source, prefix=path)
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(_problem(path, source, f"must be a finite number, got {value!r}"))
        check = f.metadata.get("check")
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if check is not None and number and not check.admits(value):
            raise ConfigError(_problem(path, source, f"must be {check}, got {value!r}"))
    own = getattr(obj, "check_fields", None)
    if own is not None:
        try:
            own()
        except ConfigError as err:
            text = f"is inconsistent: {err}"
            raise ConfigError(_problem(prefix or "the config", source, text)) from None
