"""Prompt batches, (prompt, response) token sequences and the length settings of the LM backend."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from constrained_align.data.chat import render_prompt, reply_text
from constrained_align.utils.cache import content_key

Messages = list[dict[str, str]]


@dataclass
class SamplingSettings:
    """How responses are drawn.

    Attributes:
        max_new_tokens: most response tokens (EOS included).
        temperature: softmax temperature; 0 means greedy decoding.
        top_p: nucleus mass kept (1 keeps every token).
    """

    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0


@dataclass
class PromptBatch:
    """Prompts of an LM task: final user turns and their earlier turns."""

    prompts: list[str]
    contexts: list[Messages]

    def __len__(self) -> int:
        return len(self.prompts)

    def take(self, index: Sequence[int]) -> PromptBatch:
        """The prompts at ``index``, in that order."""
        return PromptBatch([self.prompts[i] for i in index], [self.contexts[i] for i in index])

    def repeat(self, times: int) -> PromptBatch:
        """Each prompt ``times`` times in a row (prompt-major, as samples are laid out)."""
        return self.take([i for i in range(len(self)) for _ in range(times)])

    @classmethod
    def join(cls, batches: Sequence[PromptBatch]) -> PromptBatch:
        """The prompts of ``batches`` one after the other."""
        return cls(
            [p for b in batches for p in b.prompts], [c for b in batches for c in b.contexts]
        )


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

    def to_state(self) -> dict[str, Any]:
        """The token tensors and response texts (what a sample cache stores)."""
        return {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "response_mask": self.response_mask,
            "responses": list(self.responses),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], prompts: PromptBatch) -> LMSequences:
        """Sequences from :meth:`to_state` and the prompts they answer (one row each)."""
        if len(state["responses"]) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(state['responses'])} responses")
        return cls(
            state["input_ids"],
            state["attention_mask"],
            state["response_mask"],
            list(prompts.prompts),
            list(prompts.contexts),
            list(state["responses"]),
        )

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

    def response_width(self) -> int:
        """T, the longest response (the width of response coordinates)."""
        return int(self.response_mask.sum(-1).max()) if len(self) else 0

    @classmethod
    def concat(cls, parts: Sequence[LMSequences]) -> LMSequences:
        """The rows of ``parts`` one after the other (right-padded to the widest)."""
        width = max(p.input_ids.shape[1] for p in parts)

        def pad(tensor: Tensor, value: float) -> Tensor:
            return torch.nn.functional.pad(tensor, (0, width - tensor.shape[1]), value=value)

        return cls(  # padding is masked out: its token id does not matter
            torch.cat([pad(p.input_ids, 0) for p in parts]),
            torch.cat([pad(p.attention_mask, 0) for p in parts]),
            torch.cat([pad(p.response_mask, 0) for p in parts]),
            [x for p in parts for x in p.prompts],
            [x for p in parts for x in p.contexts],
            [x for p in parts for x in p.responses],
        )

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


def prompt_token_ids(
    tokenizer: Any, prompt: str, context: Messages, max_tokens: int
) -> tuple[str, list[int]]:
    """The rendered prompt and its last ``max_tokens`` token ids."""
    text = render_prompt(tokenizer, prompt, context)
    return text, tokenizer(text, add_special_tokens=False)["input_ids"][-max_tokens:]


def response_token_ids(
    tokenizer: Any, prompt_text: str, response: str, max_tokens: int, eos: int
) -> list[int]:
    """A dataset response's first ``max_tokens`` ids, with EOS when it fits whole (a truncated
    response gets none, or the policy would learn to stop mid-sentence)."""
    ids = tokenizer(reply_text(prompt_text, response), add_special_tokens=False)["input_ids"]
    return [*ids, eos] if len(ids) < max_tokens else ids[:max_tokens]


def unwrap(model: Any) -> Any:
    """The transformers model under a peft wrapper (adapters stay injected in its layers)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


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
        fast_paths: packed rows with shared prompts for log-probs and values, and the
            sampler's fast paths; off = the plain padded computations (same values).
        pack_tokens: the most tokens per packed row.
    """

    max_prompt_tokens: int = 256
    max_response_tokens: int = 128
    chunk_size: int = 1024
    inference_batch_size: int = 16
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    fast_paths: bool = True
    pack_tokens: int = 1024

    @property
    def token_budget(self) -> int:
        """Tokens per forward pass without gradients: ``inference_batch_size`` rows of 128."""
        return 128 * self.inference_batch_size

    def __post_init__(self) -> None:
        if self.max_prompt_tokens < 1 or self.max_response_tokens < 1:
            raise ValueError("max_prompt_tokens and max_response_tokens must be at least 1")
