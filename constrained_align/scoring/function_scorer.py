"""A cost (or reward) of your own, written as a Python function over text.

A run names it ``python:package.module:function``; the function takes the prompts, the
responses and the contexts (earlier turns, or None) and returns one number per response::

    # my_costs.py
    def long_answers(prompts, responses, contexts):
        return [len(r.split()) / 100 - 1 for r in responses]   # c > 0 above 100 words

    # run config:  scorers: {constraints: {length: "python:my_costs:long_answers"}}
    #              train:   {dual: {constraints: {length: 0.0}}}

Scores are cached like a score model's, keyed by the function's name and source code, so
editing the function invalidates them.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from constrained_align.config import ConfigError
from constrained_align.utils.cache import content_key

PREFIX = "python:"


def is_function_spec(spec: str | None) -> bool:
    """Whether a scorer spec names a Python function (``python:module:function``)."""
    return isinstance(spec, str) and spec.startswith(PREFIX)


def import_function(spec: str) -> Callable[..., Any]:
    """The function a ``python:module:function`` spec names.

    Raises:
        ConfigError: a malformed spec, a module that does not import, or no such function.
    """
    target = spec[len(PREFIX) :]
    module_name, _, name = target.partition(":")
    if not module_name or not name:
        raise ConfigError(f"{spec!r}: expected python:module:function, e.g. python:my_costs:length")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(f"{spec!r}: cannot import {module_name}: {err}") from err
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ConfigError(f"{spec!r}: {module_name} has no function {name}")
    return fn


class FunctionScorer:
    """A text scorer backed by a Python function (the ``TextScorer`` calls runs make).

    Args:
        spec: ``python:module:function``.
    """

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.fn = import_function(spec)

    def fingerprint(self) -> str:
        """The function's name and source code (its scores' cache key)."""
        try:
            source = inspect.getsource(self.fn)
        except (OSError, TypeError):  # built in, or defined where no source is kept
            source = repr(self.fn)
        return content_key("function-scorer", self.spec, source)

    def score(
        self,
        prompts: Sequence[str],
        responses: Sequence[str],
        contexts: Sequence[Any] | None = None,
        *,
        desc: str | None = None,
    ) -> Tensor:
        """``(B,)`` the function's score of each response (float64).

        Raises:
            ConfigError: not one finite number per response.
        """
        contexts = list(contexts) if contexts is not None else [None] * len(prompts)
        values = self.fn(list(prompts), list(responses), contexts)
        out = torch.as_tensor([float(v) for v in values], dtype=torch.float64)
        if out.shape != (len(responses),):
            raise ConfigError(
                f"{self.spec} returned {out.numel()} scores for {len(responses)} responses"
            )
        if not torch.isfinite(out).all():
            raise ConfigError(f"{self.spec} returned a score that is not finite")
        return out
