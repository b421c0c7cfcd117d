"""Batched ancestral sampling from a causal LM with the KV cache.

Prompts come left-padded, so every row's next token sits at the last column. Position ids
follow each row's attention mask (the first real token is position 0), which is what the model
saw in training and what the log-prob pass uses, so a sampled response scores the same under
:func:`~constrained_align.backends.causal_lm.logprobs.token_logprobs` as it did while being drawn.

**Draws.** Every response has its own random stream, seeded from the call's seed and the row's
index (:class:`RowDraws`), and a token is drawn by inverting the cumulative distribution at one
uniform number (in float64). So a response depends only on the seed, its row and the model —
not on the batch size, on the order rows are batched in, or on which other rows are in its
batch — and the sampler may sort and regroup rows freely.

**Fast paths** (``fast``): prompts are batched longest first (less left padding), the prefill
projects only its last position through the LM head, and the KV cache is allocated once for
the whole response (transformers' ``StaticCache``) instead of growing by concatenation at every
step, and rows that have ended leave the running batch (their cache rows with them) instead
of being computed to the last step. With ``fast`` off, rows go in their given order with a
growing cache and stay to the end; both give the same tokens (tested).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from constrained_align.backends.causal_lm.sequences import SamplingSettings, pad_rows, unwrap
from constrained_align.types import TrainingError


class RowDraws:
    """One seeded uniform stream per row: ``seed`` and the row's index fix its draws."""

    def __init__(self, seed: int, rows: list[int]) -> None:
        self.generators = [torch.Generator().manual_seed(_row_seed(seed, r)) for r in rows]

    def uniform(self) -> Tensor:
        """``(B,)`` float64 numbers in (0, 1], one from each row's stream."""
        u = torch.empty(len(self.generators), dtype=torch.float64)
        for i, g in enumerate(self.generators):
            u[i] = torch.rand((), generator=g, dtype=torch.float64)
        return 1.0 - u

    def select(self, keep: list[int]) -> RowDraws:
        """The streams of rows ``keep`` (positions in this object), in that order."""
        kept = RowDraws.__new__(RowDraws)
        kept.generators = [self.generators[i] for i in keep]
        return kept


def _row_seed(seed: int, row: int) -> int:
    """A 63-bit seed for ``row`` of a call seeded with ``seed`` (distinct rows, distinct seeds)."""
    return (seed * 1_000_003 + row * 0x9E3779B97F4A7C15) % (2**63 - 1)


def next_token(logits: Tensor, settings: SamplingSettings, uniform: Tensor) -> Tensor:
    """``(B,)`` tokens drawn from ``(B, V)`` logits with temperature and top-p.

    Row i takes the first token whose cumulative probability reaches ``uniform[i]`` times the
    row's total (a token of probability 0 is never drawn, as ``uniform`` is never 0).

    Args:
        logits: next-token logits.
        settings: temperature (0 = argmax) and top-p.
        uniform: ``(B,)`` numbers in (0, 1] (:meth:`RowDraws.uniform`).

    Raises:
        TrainingError: the logits are not finite (the weights diverged).
    """
    if not bool(torch.isfinite(logits).all()):
        raise TrainingError("the model's next-token logits are not finite: its weights diverged")
    if settings.temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.double() / settings.temperature, dim=-1)
    order = None
    if settings.top_p < 1.0:
        probs, order = probs.sort(dim=-1, descending=True)
        # Keep the smallest prefix whose mass reaches top_p (the first token always stays).
        drop = probs.cumsum(-1) - probs >= settings.top_p
        drop[..., 0] = False
        probs = probs.masked_fill(drop, 0.0)
    cdf = probs.cumsum(-1)
    target = (uniform.to(cdf.device) * cdf[:, -1]).unsqueeze(-1)
    token = torch.searchsorted(cdf, target).squeeze(-1).clamp(max=cdf.shape[-1] - 1)
    if order is not None:
        token = order.gather(-1, token.unsqueeze(-1)).squeeze(-1)
    return token


def _cache_arguments(model: Any) -> tuple[str, bool]:
    """The forward's cache keyword (``cache`` in newer transformers, ``past_key_values`` before)
    and whether it takes ``cache_position``."""
    params = inspect.signature(type(unwrap(model)).forward).parameters
    return ("cache" if "cache" in params else "past_key_values"), "cache_position" in params


def _new_cache(model: Any, length: int, fast: bool) -> Any:
    """A KV cache: allocated once for ``length`` tokens (fast), or grown step by step."""
    from transformers import DynamicCache, StaticCache

    config = unwrap(model).config
    return StaticCache(config=config, max_cache_len=length) if fast else DynamicCache()


#: The running batch drops its finished rows once they are this share of it or more.
DROP_SHARE = 0.25


@torch.no_grad()
def sample_responses(
    model: torch.nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    *,
    settings: SamplingSettings,
    eos_ids: list[int],
    pad_id: int,
    draws: RowDraws,
    fast: bool = True,
) -> tuple[Tensor, Tensor]:
    """Draw one response per row.

    Args:
        model: a causal LM (transformers' forward with a KV cache and ``logits_to_keep``).
        input_ids: ``(B, P)`` left-padded prompts.
        attention_mask: ``(B, P)`` 1 on prompt tokens.
        settings: temperature, top-p and length.
        eos_ids: tokens that end a response (kept as its last token).
        pad_id: filler after a row has ended.
        draws: the rows' random streams.
        fast: a cache allocated once, a prefill that projects only its last position, and
            finished rows dropped from the running batch (with their cache rows) once they
            are :data:`DROP_SHARE` of it, so the steps after a row's EOS cost nothing for it.

    Returns:
        ``(B, T)`` response ids (pad after EOS) and ``(B, T)`` float mask, 1 on response tokens
        (EOS included).
    """
    batch, width = input_ids.shape
    device = input_ids.device
    eos = torch.tensor(eos_ids, device=device)
    tokens = torch.full((batch, settings.max_new_tokens), pad_id, dtype=torch.long, device=device)
    live = torch.zeros((batch, settings.max_new_tokens), device=device)
    rows = torch.arange(batch, device=device)  # the original rows still in the running batch
    mask = attention_mask.clone()
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    cache_key, takes_position = _cache_arguments(model)
    cache = _new_cache(model, width + settings.max_new_tokens, fast)
    step_ids, filled, length = input_ids, 0, 0
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    for step in range(settings.max_new_tokens):
        extra: dict[str, Any] = {cache_key: cache}
        if takes_position:
            extra["cache_position"] = torch.arange(
                filled, filled + step_ids.shape[1], device=device
            )
        if fast and step == 0:
            extra["logits_to_keep"] = 1
        out = model(
            input_ids=step_ids, attention_mask=mask, position_ids=positions, use_cache=True, **extra
        )
        filled += step_ids.shape[1]
        token = next_token(out.logits[:, -1], settings, draws.uniform())
        token = torch.where(done, torch.full_like(token, pad_id), token)
        tokens[rows, step] = token
        live[rows, step] = (~done).float()
        length = step + 1
        done = done | torch.isin(token, eos)
        if bool(done.all()):
            break
        if fast and int(done.sum()) >= DROP_SHARE * len(rows):
            keep = (~done).nonzero().squeeze(-1)
            cache.reorder_cache(keep)
            rows, mask, positions, token = rows[keep], mask[keep], positions[keep], token[keep]
            draws = draws.select(keep.tolist())
            done = done[keep]
        step_ids = token.unsqueeze(-1)
        mask = torch.cat([mask, mask.new_ones(len(rows), 1)], dim=-1)
        positions = positions[:, -1:] + 1
    return tokens[:, :length], live[:, :length]


def generate_batches(
    model: torch.nn.Module,
    prompt_ids: list[list[int]],
    *,
    settings: SamplingSettings,
    batch_size: int,
    eos_ids: list[int],
    pad_id: int,
    seed: int,
    fast: bool = True,
    row_ids: Sequence[int] | None = None,
) -> list[list[int]]:
    """One response (token ids, EOS included when drawn) per prompt, ``batch_size`` prompts
    per left-padded batch (longest prompts first when ``fast``); row i's draws come from
    ``RowDraws(seed, [row_ids[i]])`` (default ``i``) whatever batch it lands in (a
    data-parallel process passes its prompts' rows in the whole call, so sharding changes no
    draw)."""
    device = next(model.parameters()).device
    order = list(range(len(prompt_ids)))
    ids_of = list(row_ids if row_ids is not None else range(len(prompt_ids)))
    if fast:
        order.sort(key=lambda i: -len(prompt_ids[i]))
    responses: list[list[int]] = [[] for _ in prompt_ids]
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        rows = [prompt_ids[i] for i in index]
        ids = pad_rows(rows, pad_id, left=True)
        lengths = torch.tensor([len(r) for r in rows])
        mask = (torch.arange(ids.shape[1]) >= ids.shape[1] - lengths[:, None]).long()
        out, live = sample_responses(
            model,
            ids.to(device),
            mask.to(device),
            settings=settings,
            eos_ids=eos_ids,
            pad_id=pad_id,
            draws=RowDraws(seed, [ids_of[i] for i in index]),
            fast=fast,
        )
        for i, tokens, keep in zip(index, out.cpu(), live.cpu().bool()):
            responses[i] = tokens[keep].tolist()
    return responses
