"""The policy backend as a run sees it: a sample cache, step counting, timers and resume.

:class:`RunBackend` wraps a :class:`~constrained_align.backends.causal_lm.CausalLMPolicy` (and,
through :meth:`RunBackend.fork`, each of its forks) and is what the algorithm gets as
``ctx.backend``. It adds what belongs to a run rather than to a model:

- **The sample cache.** Samples are stored on disk under a content key: reference samples by
  the reference weights' fingerprint, policy samples by the run's tag, the backend's name and
  its optimizer-step count (in a deterministic run these identify the weights), plus the
  prompts, the sampling settings and the seed. A rerun of the same run draws nothing again.
- **Resume by replay.** A resumed run executes the algorithm again from its start. Until a
  backend reaches the optimizer step its checkpoint was saved at, :meth:`RunBackend.step`
  counts the step instead of computing it, and every sample comes from the cache (so λ and
  the labels follow the interrupted run's path); at that step the saved weights, optimizer and
  critics are loaded. The sampling generators, the multiplier and the RNG are restored where
  they were saved, at the checkpoint's record (:meth:`Replay.finish`, called by the run log).
  The algorithm modules need no resume logic of their own.
- **Timers and progress.** Seconds generating and in optimizer steps, tokens generated, and a
  hook called after every optimizer step (the progress bar).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from torch import Tensor

from constrained_align.backends.causal_lm import CausalLMPolicy, PromptBatch, SamplingSettings
from constrained_align.backends.causal_lm.policy import lm_samples
from constrained_align.backends.causal_lm.sequences import LMSequences
from constrained_align.types import LogProbs, Samples
from constrained_align.utils.cache import DiskCache, content_key
from constrained_align.utils.distributed import Reductions, block


class Replay:
    """The checkpointed states a resumed run replays towards, shared by a backend and its forks.

    Args:
        states: backend name → ``CausalLMPolicy.state_dict()`` saved in the checkpoint.
    """

    def __init__(self, states: dict[str, dict[str, Any]] | None = None) -> None:
        self.states = dict(states or {})
        self.pending = dict(self.states)  # not yet loaded

    def finish(self, backends: list[RunBackend]) -> None:
        """At the checkpoint's record: give every backend its saved sampling generator."""
        for backend in backends:
            state = self.states.get(backend.name)
            if state is not None:
                backend.inner.generator.set_state(state["generator"])


class RunBackend:
    """A :class:`CausalLMPolicy` with the run's sample cache, step counting and resume.

    Args:
        inner: the policy backend.
        cache: where samples are cached on disk, or None.
        run_tag: the identity of the run's inputs (``runner.train.run_tag``); None makes the
            policy's identity a hash of its trainable weights instead.
        name: tells forks apart in cache keys and checkpoints.
        replay: the checkpointed states of a resumed run (None: a fresh run).
        on_step: called after every optimizer step, replayed ones included.
        dist: the cross-process reductions. Under several processes :meth:`sample` draws this
            process's share of the prompts and gathers every process's responses, so the
            algorithm sees the whole sample on every process (:meth:`unsharded` turns that
            off for callers that share the prompts out themselves).
    """

    def __init__(
        self,
        inner: CausalLMPolicy,
        *,
        cache: DiskCache | None = None,
        run_tag: str | None = None,
        name: str = "policy",
        replay: Replay | None = None,
        on_step: Callable[[], None] | None = None,
        dist: Reductions | None = None,
    ) -> None:
        self.inner = inner
        self.dist = dist or Reductions()
        self.sharded = self.dist.world_size > 1
        self.cache = cache
        self.run_tag = run_tag
        self.name = name
        self.replay = replay or Replay()
        self.on_step = on_step
        self.forks: list[RunBackend] = []
        self.steps = inner.steps
        # Seconds generating and in optimizer steps, and tokens generated (for metrics).
        self.timers = {"generation": 0.0, "training": 0.0, "generated_tokens": 0.0}
        self.replay_until = 0
        self._saved: dict[str, Any] | None = self.replay.pending.pop(name, None)
        if self._saved is not None:
            self.replay_until = int(self._saved["steps"])
            if self.replay_until == 0:
                self._load_saved()

    @property
    def replaying(self) -> bool:
        """True while this backend re-walks steps its checkpoint already holds."""
        return self.steps < self.replay_until

    def _load_saved(self) -> None:
        assert self._saved is not None
        self.inner.load_state_dict(self._saved, generator=False)
        self._saved = None

    # ---------------------------------------------------------------- sampling

    def _model_key(self, reference: bool) -> str:
        if reference:
            return self.inner.reference_fingerprint()
        if self.run_tag is not None:
            return content_key(self.run_tag, self.name, self.steps)
        return self.inner.policy_fingerprint()

    def sample(
        self,
        prompts: PromptBatch,
        num_samples: int,
        *,
        reference: bool = False,
        seed: int | None = None,
        sampling: SamplingSettings | None = None,
        row_ids: Sequence[int] | None = None,
    ) -> Samples:
        """The inner backend's samples, from the cache when they were drawn before
        (``row_ids``: see :meth:`CausalLMPolicy.sample`; only where unsharded)."""
        if row_ids is not None and self.sharded:
            raise ValueError("row_ids are for callers that share the prompts out themselves")
        seed = self.inner.next_seed() if seed is None else seed
        sampling = sampling or self.inner.settings.sampling
        key = content_key(
            "samples",
            self._model_key(reference),
            self.inner.tokenizer_fingerprint(),
            self.inner.settings.max_prompt_tokens,
            prompts.prompts,
            prompts.contexts,
            num_samples,
            sampling,
            seed,
            None if row_ids is None else list(row_ids),
        )
        stored = self.cache.get(key) if self.cache is not None else None
        if stored is not None:
            seqs = LMSequences.from_state(stored, prompts.repeat(num_samples))
            return lm_samples(seqs, len(prompts), num_samples)
        if self.replaying and not reference:
            raise RuntimeError(
                "cannot resume: the sample cache lacks the on-policy samples the interrupted "
                "run drew (was the cache folder removed?); start the run again instead"
            )
        started = time.perf_counter()
        seqs = self._draw(prompts, num_samples, reference, seed, sampling, row_ids)
        self.timers["generation"] += time.perf_counter() - started
        if self.cache is not None and (self.dist.is_main or not self.sharded):
            self.cache.put(key, seqs.to_state())
        return lm_samples(seqs, len(prompts), num_samples)

    def _draw(
        self,
        prompts: PromptBatch,
        num_samples: int,
        reference: bool,
        seed: int,
        sampling: SamplingSettings,
        row_ids: Sequence[int] | None,
    ) -> LMSequences:
        """The responses, drawn by this process; when sharded, its block of the prompts is
        drawn here and every process's blocks are gathered in rank order. Each response draws
        from its row in the whole call, so the sample does not depend on the processes."""

        def draw(rows: PromptBatch, ids: Sequence[int] | None) -> LMSequences:
            seqs = self.inner.sample(
                rows, num_samples, reference=reference, seed=seed, sampling=sampling, row_ids=ids
            ).sequences
            self.timers["generated_tokens"] += float(seqs.response_mask.sum())
            return seqs

        if not self.sharded:
            return draw(prompts, row_ids)
        world = self.dist.world_size
        blocks = [block(len(prompts), world, rank) for rank in range(world)]
        mine = blocks[self.dist.rank]
        ids = range(mine.start * num_samples, mine.stop * num_samples)
        state = draw(prompts.take(mine), ids).to_state() if len(mine) else None
        parts = zip(self.dist.gather_objects(state), blocks)
        return LMSequences.concat(
            [
                LMSequences.from_state(part, prompts.take(rows).repeat(num_samples))
                for part, rows in parts
                if part is not None
            ]
        )

    @contextmanager
    def unsharded(self) -> Iterator[None]:
        """Within: :meth:`sample` draws exactly the prompts it is given (callers that share
        the prompts out over processes themselves: the held-out evaluation, the KL log)."""
        sharded, self.sharded = self.sharded, False
        try:
            yield
        finally:
            self.sharded = sharded

    # ---------------------------------------------------------------- the rest of the interface

    def logprobs(self, sequences: LMSequences, *, reference: bool = False) -> LogProbs:
        return self.inner.logprobs(sequences, reference=reference)

    def pair_logprobs(
        self, response_0: LMSequences, response_1: LMSequences, *, reference: bool = False
    ) -> tuple[LogProbs, LogProbs]:
        return self.inner.pair_logprobs(response_0, response_1, reference=reference)

    def add_critic(self, head: str) -> None:
        self.inner.add_critic(head)

    def values(self, sequences: LMSequences, head: str) -> Tensor:
        return self.inner.values(sequences, head)

    def step(self, closure: Callable[..., Tensor], weight: Tensor | None = None) -> float:
        """The inner optimizer step; while replaying, only counted (the loss is NaN), and at
        the checkpoint's step the saved state is loaded."""
        if self.replaying:
            self.steps += 1
            if self.steps == self.replay_until:
                self._load_saved()
            loss = float("nan")
        else:
            started = time.perf_counter()
            loss = self.inner.step(closure, weight)
            self.timers["training"] += time.perf_counter() - started
            self.steps += 1
        if self.on_step is not None:
            self.on_step()
        return loss

    def fork(self) -> RunBackend:
        """A fork of the inner backend, with this run's cache, tag, replay and progress."""
        child = RunBackend(
            self.inner.fork(),
            cache=self.cache,
            run_tag=self.run_tag,
            name=f"{self.name}/fork{len(self.forks) + 1}",
            replay=self.replay,
            on_step=self.on_step,
            dist=self.dist,
        )
        self.forks.append(child)
        return child

    def set_reference_to_policy(self) -> None:
        self.inner.set_reference_to_policy()

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state)

    def tree(self) -> list[RunBackend]:
        """This backend and its forks (recursively), in creation order."""
        out = [self]
        for fork in self.forks:
            out.extend(fork.tree())
        return out


def total_timers(root: RunBackend) -> dict[str, float]:
    """Seconds generating and in optimizer steps, and tokens generated, of a backend and its
    forks together."""
    totals = {"generation": 0.0, "training": 0.0, "generated_tokens": 0.0}
    for backend in root.tree():
        for key in totals:
            totals[key] += backend.timers[key]
    return totals
