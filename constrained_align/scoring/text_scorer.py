"""Text-level scoring: ``score(prompts, responses) -> tensor`` with the scorer's own tokenizer.

A policy and its scorers need not share a tokenizer: the policy hands over text, and
:class:`TextScorer` re-tokenizes it for its model (a MiniLM cost model can score any policy's
output). Inputs are sorted by length so each batch pads little, then scores are returned in the
caller's order.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from constrained_align.config import ConfigError
from constrained_align.scoring.external import ExternalScoreModel, load_external
from constrained_align.scoring.score_model import CONFIG_NAME, Encoded, Messages, ScoreModel
from constrained_align.scoring.shipped import shipped_path
from constrained_align.utils.cache import content_key, state_fingerprint


class TextScorer:
    """Scores (prompt, response) texts with a :class:`ScoreModel`, batched, without gradients.

    Args:
        model: the score model, ours or one trained elsewhere
            (:class:`~constrained_align.scoring.external.ExternalScoreModel`).
        batch_size: sequences per forward pass.
        device: where to run (the model is moved there); default the model's device.
        progress: show a progress bar when there is more than one batch.
        cache: remember every score by (context, prompt, response), so that scoring the same
            text again (an evaluation that reports overall and per source, then plots) costs
            nothing. Off by default: a policy's fresh samples rarely repeat.
        keep_tokens: remember every input's tokens by (context, prompt, response), for a
            scorer that scores the same texts again as its weights change (validation after
            every training epoch): the texts are tokenized once.
    """

    def __init__(
        self,
        model: ScoreModel | ExternalScoreModel,
        *,
        batch_size: int = 64,
        device: str | torch.device | None = None,
        progress: bool = True,
        cache: bool = False,
        keep_tokens: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
        self.model = model
        self.batch_size = batch_size
        self.device = torch.device(device) if device else next(model.parameters()).device
        self.model.to(self.device)
        self.progress = progress
        self.path: Path | None = None
        self._cache: dict[tuple[str, str, str], float] | None = {} if cache else None
        self._tokens: dict[tuple[str, str, str], Encoded] | None = {} if keep_tokens else None

    @classmethod
    def from_pretrained(
        cls, path: str | Path, *, kind: str | None = None, **kwargs: object
    ) -> TextScorer:
        """Load a score model and wrap it (other keyword arguments go to the constructor).

        Args:
            path: a folder saved by :meth:`ScoreModel.save_pretrained`, a shipped model's name
                (``default-cost``, ...; :mod:`.shipped`), or a Safe RLHF score
                model or a one-label sequence classifier (a folder, or a hub id when online;
                see :mod:`constrained_align.scoring.external`).
            kind: ``reward`` or ``cost``: checked against the model's own kind where it has
                one; required for a sequence classifier, which does not.

        Raises:
            ConfigError: a model of the other kind, or a folder of no known layout.
        """
        model: ScoreModel | ExternalScoreModel
        if shipped_path(path) or (Path(path) / CONFIG_NAME).is_file():
            model = ScoreModel.from_pretrained(path)
            if kind is not None and model.config.kind != kind:
                raise ConfigError(f"{path} is a {model.config.kind} model, not a {kind} model")
        else:
            model = load_external(str(path), kind)
        scorer = cls(model, **kwargs)  # type: ignore[arg-type]
        scorer.path = Path(path)
        return scorer

    @property
    def kind(self) -> str:
        """``reward`` or ``cost``."""
        return self.model.config.kind

    def encode_all(
        self,
        prompts: Sequence[str],
        responses: Sequence[str],
        contexts: Sequence[Messages] | None = None,
    ) -> list[Encoded]:
        """Tokenize every pair (in order)."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        if contexts is not None and len(contexts) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(contexts)} contexts")
        ctx = contexts if contexts is not None else [None] * len(prompts)
        if self._tokens is None:
            return [self.model.encode(p, r, c) for p, r, c in zip(prompts, responses, ctx)]
        items = []
        for p, r, c in zip(prompts, responses, ctx):
            key = (json.dumps(c or []), p, r)
            if key not in self._tokens:
                self._tokens[key] = self.model.encode(p, r, c)
            items.append(self._tokens[key])
        return items

    @torch.no_grad()
    def score_encoded(self, items: Sequence[Encoded], *, desc: str | None = None) -> Tensor:
        """``(N,)`` float32 scores of already tokenized inputs, in input order."""
        order = sorted(range(len(items)), key=lambda i: len(items[i].input_ids))
        out = torch.empty(len(items), dtype=torch.float32)
        was_training = self.model.training
        self.model.eval()
        starts = range(0, len(order), self.batch_size)
        bar = tqdm(
            starts,
            desc=desc or f"scoring ({self.kind})",
            disable=not self.progress or len(starts) <= 1,
            leave=False,
        )
        try:
            for start in bar:
                idx = order[start : start + self.batch_size]
                batch = self.model.collate([items[i] for i in idx])
                batch = {k: v.to(self.device) for k, v in batch.items()}
                out[idx] = self.model(**batch).float().cpu()
        finally:
            self.model.train(was_training)
        return out

    def score(
        self,
        prompts: Sequence[str],
        responses: Sequence[str],
        contexts: Sequence[Messages] | None = None,
        *,
        desc: str | None = None,
    ) -> Tensor:
        """``(N,)`` float32 end scores of ``responses[i]`` to ``prompts[i]``.

        Args:
            prompts: the final user turns.
            responses: the assistant replies to score.
            contexts: earlier turns of each conversation (lists of ``{"role", "content"}``),
                or None for single-turn prompts.
            desc: progress-bar label.
        """
        if self._cache is None:
            return self.score_encoded(self.encode_all(prompts, responses, contexts), desc=desc)
        ctx = contexts if contexts is not None else [None] * len(prompts)
        keys = [(json.dumps(c or []), p, r) for p, r, c in zip(prompts, responses, ctx)]
        new = list({k: i for i, k in enumerate(keys) if k not in self._cache}.values())
        if new:
            items = self.encode_all(
                [prompts[i] for i in new],
                [responses[i] for i in new],
                [ctx[i] for i in new],  # type: ignore[misc]
            )
            scores = self.score_encoded(items, desc=desc)
            self._cache.update((keys[i], float(v)) for i, v in zip(new, scores))
        return torch.tensor([self._cache[k] for k in keys], dtype=torch.float32)


class SequenceScorer:
    """Reward and cost of a policy's sequences from two text scorers (the ``Scorer`` interface).

    It reads the ``prompts``, ``contexts`` and ``responses`` texts of whatever sequence batch it
    is given, so score models with their own tokenizer score any policy's output. Scores are
    cached on disk by (scorer fingerprint, texts) when a cache is given, so a rerun does not
    score the same responses again.

    Args:
        reward: the reward scorer (helpfulness).
        cost: the cost scorer (c > 0 unsafe).
        constraints: the scorers of further constraints, by name (score models, or
            :class:`~constrained_align.scoring.function_scorer.FunctionScorer`).
        cache: an object with ``get(key)``/``put(key, value)`` (e.g.
            :class:`~constrained_align.utils.cache.DiskCache`), or None.
    """

    def __init__(
        self,
        reward: TextScorer,
        cost: TextScorer,
        *,
        cache: Any = None,
        constraints: dict[str, Any] | None = None,
    ) -> None:
        self.scorers = {"reward": reward, "cost": cost, **(constraints or {})}
        self.cache = cache
        self._fingerprints: dict[str, str] = {}
        self.seconds = 0.0  # time spent scoring (cache hits excluded)

    def fingerprint(self, kind: str) -> str:
        """Content hash of a score model's weights, or a scorer's own ``fingerprint()`` (a
        function's source), computed once."""
        if kind not in self._fingerprints:
            scorer = self.scorers[kind]
            own = getattr(scorer, "fingerprint", None)
            self._fingerprints[kind] = own() if callable(own) else state_fingerprint(scorer.model)
        return self._fingerprints[kind]

    def _score(self, kind: str, sequences: Any) -> Tensor:
        texts = (sequences.prompts, sequences.responses, sequences.contexts)
        key = content_key("scores", self.fingerprint(kind), *texts) if self.cache else None
        stored = self.cache.get(key) if key else None
        if stored is None:
            started = time.perf_counter()
            stored = self.scorers[kind].score(*texts, desc=f"scoring {kind}")
            self.seconds += time.perf_counter() - started
            if key:
                self.cache.put(key, stored)
        return stored.double()

    def reward(self, sequences: Any) -> Tensor:
        """``(B,)`` reward of each (prompt, response) row."""
        return self._score("reward", sequences)

    def cost(self, sequences: Any) -> Tensor:
        """``(B,)`` cost of each row; c > 0 means unsafe."""
        return self._score("cost", sequences)

    def constraint(self, name: str, sequences: Any) -> Tensor:
        """``(B,)`` cost of constraint ``name`` (``cost``, or a further one) of each row."""
        if name not in self.scorers or name == "reward":
            raise KeyError(f"no cost for constraint {name!r}; known: {self.constraint_names}")
        return self._score(name, sequences)

    @property
    def constraint_names(self) -> list[str]:
        """``cost`` and the further constraints' names."""
        return [name for name in self.scorers if name != "reward"]
