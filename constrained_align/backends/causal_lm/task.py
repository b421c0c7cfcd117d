"""The :class:`~constrained_align.types.Task` of a language-model run.

Preference pairs in the canonical schema become :class:`~constrained_align.types.PairBatch` es
of tokenized sequences once, in a seeded order, and the same batch objects are handed out at
every call (so reference log-probs and scores computed on them are computed once). Labels the
data does not have are NaN: HH-RLHF helpful-base orders helpfulness only, harmless-base safety
only, and the algorithms train each axis on the pairs labelled on it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from constrained_align.backends.causal_lm.policy import CausalLMPolicy
from constrained_align.backends.causal_lm.sequences import LMSequences, PromptBatch
from constrained_align.types import PairBatch


def _label(value: Any) -> float:
    """A 0/1 (or bool) label as a float, None as NaN."""
    return math.nan if value is None else float(value)


def preferred(row: Mapping[str, Any]) -> tuple[str, list, str] | None:
    """(prompt, context, response) of a pair's preferred response, or None."""
    for key in ("better_response_id", "safer_response_id"):
        if row.get(key) is not None:
            return row["prompt"], list(row["context"] or []), row[f"response_{int(row[key])}"]
    for i in (0, 1):
        if row.get(f"is_response_{i}_safe"):
            return row["prompt"], list(row["context"] or []), row[f"response_{i}"]
    return None


class LMTask:
    """Pairs and prompts of a causal-LM run.

    Args:
        backend: the policy (it tokenizes the pairs).
        pairs: canonical rows (``prompt, context, response_0, response_1, better_response_id,
            safer_response_id, is_response_0_safe, is_response_1_safe``).
        prompts: the prompts sampled for on-policy estimates and reference samples.
        pair_batch_size: pairs per optimizer step.
        samples_per_prompt: on-policy responses per prompt per estimate.
        reference_samples: reference responses per prompt for the one-shot dual.
        prompts_per_step: prompts per estimate; step ``k`` takes the ``k``-th slice (cyclic).
        seed: seed of the pair order.
    """

    def __init__(
        self,
        backend: CausalLMPolicy,
        pairs: Sequence[Mapping[str, Any]],
        prompts: PromptBatch,
        *,
        pair_batch_size: int = 8,
        samples_per_prompt: int = 4,
        reference_samples: int = 8,
        prompts_per_step: int = 32,
        seed: int = 0,
    ) -> None:
        if not len(prompts):
            raise ValueError("an LM task needs at least one prompt")
        self.backend = backend
        self.rows = list(pairs)
        self.all_prompts = prompts
        self.pair_batch_size = pair_batch_size
        self.samples_per_prompt = samples_per_prompt
        self.reference_samples = reference_samples
        self.prompts_per_step = min(prompts_per_step, len(prompts))
        self.seed = seed
        self._batches: list[PairBatch] | None = None
        self._ptx: dict[int, LMSequences] = {}
        self._ptx_rows: list[tuple[str, list, str]] | None = None

    def prompts(self, step: int) -> PromptBatch:
        """The ``step``-th slice of ``prompts_per_step`` prompts, wrapping around."""
        n, k = len(self.all_prompts), self.prompts_per_step
        index = [(step * k + i) % n for i in range(k)]
        return PromptBatch(
            [self.all_prompts.prompts[i] for i in index],
            [self.all_prompts.contexts[i] for i in index],
        )

    def pair_batches(self, epoch: int) -> list[PairBatch]:
        """Every pair, tokenized, in batches of ``pair_batch_size`` (the same objects each call)."""
        if self._batches is None:
            order = torch.randperm(
                len(self.rows), generator=torch.Generator().manual_seed(self.seed)
            ).tolist()
            size = self.pair_batch_size
            self._batches = [
                self._batch([self.rows[i] for i in order[s : s + size]])
                for s in range(0, len(order), size)
            ]
        return self._batches

    def ptx_batch(self, step: int) -> LMSequences:
        """Supervised (prompt, response) rows for the online keys' PTX term: each pair's
        preferred response (the more helpful one, else the safer one, else one labelled safe),
        ``pair_batch_size`` of them per step, cycling through the pairs in their seeded order."""
        if self._ptx_rows is None:
            self._ptx_rows = [r for r in map(preferred, self.rows) if r is not None]
        rows = self._ptx_rows
        if not rows:
            raise ValueError("no pair has a preferred response for the PTX term")
        n, k = len(rows), min(self.pair_batch_size, len(rows))
        start = (step * k) % n
        if start not in self._ptx:
            chunk = [rows[(start + i) % n] for i in range(k)]
            batch = PromptBatch([c[0] for c in chunk], [c[1] for c in chunk])
            self._ptx[start] = self.backend.encode(batch, [c[2] for c in chunk])
        return self._ptx[start]

    def _batch(self, rows: list[Mapping[str, Any]]) -> PairBatch:
        prompts = PromptBatch([r["prompt"] for r in rows], [list(r["context"] or []) for r in rows])

        def column(name: str) -> torch.Tensor:
            return torch.tensor([_label(r[name]) for r in rows], dtype=torch.float64)

        return PairBatch(
            response_0=self.backend.encode(prompts, [r["response_0"] for r in rows]),
            response_1=self.backend.encode(prompts, [r["response_1"] for r in rows]),
            better_id=column("better_response_id"),
            safer_id=column("safer_response_id"),
            safe_0=column("is_response_0_safe"),
            safe_1=column("is_response_1_safe"),
            weight=torch.ones(len(rows), dtype=torch.float64),
        )
