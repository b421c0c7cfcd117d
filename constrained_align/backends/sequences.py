"""Prompt batches, (prompt, response) token sequences and the length settings of the LM backend."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from constrained_align.backends.sampling import SamplingSettings
from constrained_align.utils.cache import content_key

Messages = list[dict[str, str]]


@dataclass
class PromptBatch:
    """Prompts of an LM task: final user turns and their earlier turns."""

    prompts: list[str]
    contexts: list[Messages]

    def __len__(self) -> int:
        return len(self.prompts)


@dataclass
class LMSequences:
    """(prompt, response) rows as tokens (right-padded) and as text (for text-level scorers).

    Attributes:
        input_ids: ``(B, L)`` prompt then response tokens, then padding.
        attention_mask: ``(B, L)`` 1 on prompt and response tokens.
        response_mask: ``(B, L)`` float, 1 on response tokens (EOS included).
        prompts, contexts, responses: the texts, ``B`` each.
    """

    input_ids: Tensor
    attention_mask: Tensor
    response_mask: Tensor
    prompts: list[str]
    contexts: list[Messages]
    responses: list[str]
    _key: str | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def key(self) -> str:
        """Content hash of the token tensors (the reference log-prob cache key)."""
        if self._key is None:
            self._key = content_key(self.input_ids, self.attention_mask, self.response_mask)
        return self._key

    def response_index(self) -> tuple[Tensor, Tensor]:
        """Where each row's response sits: ``(B, T)`` column indices into the sequence of the
        t-th response token, and the ``(B, T)`` float mask of real tokens (a prefix of each
        row), T the longest response."""
        mask = self.response_mask
        lengths = mask.sum(-1).long()  # (B,)
        starts = mask.argmax(-1)  # (B,) first response column (responses are contiguous)
        width = int(lengths.max()) if len(lengths) else 0
        offsets = torch.arange(width)
        keep = (offsets < lengths[:, None]).float()  # (B, T)
        index = (starts[:, None] + offsets).clamp(max=mask.shape[1] - 1)  # (B, T)
        return index, keep

    def to_response(self, full: Tensor) -> Tensor:
        """``(B, L)`` per-position values → ``(B, T)`` in response coordinates (0 past the end)."""
        index, keep = self.response_index()
        return full.gather(1, index.to(full.device)) * keep.to(full.device, full.dtype)

    def index(self, rows: Sequence[int] | Tensor) -> LMSequences:
        rows = torch.as_tensor(rows, dtype=torch.long)
        keep = self.attention_mask[rows].sum(0) > 0  # drop columns that are padding everywhere
        pick = rows.tolist()
        return LMSequences(
            self.input_ids[rows][:, keep],
            self.attention_mask[rows][:, keep],
            self.response_mask[rows][:, keep],
            [self.prompts[i] for i in pick],
            [self.contexts[i] for i in pick],
            [self.responses[i] for i in pick],
        )


def make_sequences(
    rows: list[list[int]], starts: list[int], batch: PromptBatch, texts: list[str], *, pad_id: int
) -> LMSequences:
    """Right-padded sequences from ragged token rows whose responses start at ``starts``."""
    ids = pad_rows(rows, pad_id)
    lengths = torch.tensor([len(r) for r in rows])
    position = torch.arange(ids.shape[1])
    mask = (position < lengths[:, None]).long()
    response = (position >= torch.tensor(starts)[:, None]).float() * mask
    return LMSequences(ids, mask, response, batch.prompts, batch.contexts, texts)


def pad_rows(rows: Sequence[Sequence[int]], pad: int, *, left: bool = False) -> Tensor:
    """``(B, L)`` long tensor of ragged rows padded with ``pad`` on the right (or left)."""
    length = max((len(r) for r in rows), default=0)
    out = torch.full((len(rows), length), pad, dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            span = slice(length - len(row), length) if left else slice(0, len(row))
            out[i, span] = torch.as_tensor(row, dtype=torch.long)
    return out


@dataclass
class LMSettings:
    """Lengths, batching and sampling of a causal-LM policy.

    Attributes:
        max_prompt_tokens: prompts keep their last this many tokens.
        max_response_tokens: dataset responses keep their first this many tokens (EOS included).
        chunk_size: response positions projected through the LM head at once.
        inference_batch_size: rows per forward pass when sampling or scoring without gradients.
        sampling: temperature, top-p and ``max_new_tokens`` of ``sample``.
    """

    max_prompt_tokens: int = 256
    max_response_tokens: int = 128
    chunk_size: int = 1024
    inference_batch_size: int = 16
    sampling: SamplingSettings = field(default_factory=SamplingSettings)

    def __post_init__(self) -> None:
        if self.max_prompt_tokens < 1 or self.max_response_tokens < 1:
            raise ValueError("max_prompt_tokens and max_response_tokens must be at least 1")
