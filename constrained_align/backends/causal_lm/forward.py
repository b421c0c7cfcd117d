"""One pass of a decoder over sequences, read out at the response tokens.

Log-probs and critic values need the same thing: for every response token, the hidden state
that predicts it (the state one position earlier). :func:`response_readout` computes those
states and hands them to a readout — the LM head for log-probs, a value head for a critic —
then places the results in response coordinates ``(B, T)`` (column t = response token t).

Two layouts, chosen by ``LMSettings.fast_paths`` and the attention implementation:

- **packed** (the fast path; SDPA or eager attention): padding-free rows with each prompt once
  (:mod:`.packing`), so a preference pair's prompt, or a rollout prompt's G samples' prompt,
  is computed once; without gradients the rows go through in groups of at most
  ``LMSettings.token_budget`` tokens;
- **padded** (the plain path, and flash-attention-2, whose varlen kernels take no 4-D masks):
  right-padded rows as given, ``inference_batch_size`` at a time without gradients.

Both give the same values to float rounding (tested to 1e-5).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from constrained_align.backends.causal_lm.packing import Packed, Placement, pack
from constrained_align.backends.causal_lm.sequences import LMSequences, LMSettings, unwrap

Readout = Callable[[Tensor, Tensor], Tensor]
"""``readout(states (n, H), targets (n,)) -> (n,)`` values at the scored response tokens."""


def packable(model: Any, settings: LMSettings) -> bool:
    """Whether the packed layout applies: fast paths on, and attention that takes 4-D masks."""
    attn = getattr(unwrap(model).config, "_attn_implementation", "sdpa")
    return settings.fast_paths and attn in ("sdpa", "eager")


def _decoder(model: Any) -> Any:
    return unwrap(model).get_decoder()


def _padded(model: Any, seqs: LMSequences, device: Any) -> tuple[Tensor, Tensor, Placement]:
    ids, mask = seqs.input_ids.to(device), seqs.attention_mask.to(device)
    hidden = _decoder(model)(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, L, H)
    response = seqs.response_mask
    if bool(response[:, 0].any()):
        raise ValueError("position 0 has no preceding token to predict it from")
    rows, cols = response.nonzero(as_tuple=True)  # (n,) each
    starts = response.argmax(-1)  # first response column of each row
    width = int(response.sum(-1).max()) if len(rows) else 0
    place = Placement(rows, cols - starts[rows], (len(seqs), width))
    return hidden[rows.to(device), (cols - 1).to(device)], ids[rows, cols], place


def _packed(model: Any, packed: Packed, rows: slice, device: Any) -> tuple[Tensor, Tensor, Tensor]:
    """States and targets of the scored tokens in the packed ``rows``, and which scored tokens
    of ``packed`` they are."""
    attn = unwrap(model).config._attn_implementation
    dtype = None if attn == "sdpa" else next(model.parameters()).dtype
    hidden = _decoder(model)(
        input_ids=packed.input_ids[rows].to(device),
        attention_mask=packed.attention_mask(rows, dtype).to(device),
        position_ids=packed.position_ids[rows].to(device),
    ).last_hidden_state  # (r, N, H)
    picked = (packed.row >= rows.start) & (packed.row < rows.stop)
    local = (packed.row[picked] - rows.start).to(device)
    states = hidden[local, packed.source[picked].to(device)]
    targets = packed.input_ids[packed.row[picked], packed.target[picked]]
    return states, targets.to(device), picked.nonzero(as_tuple=True)[0]


def response_readout(
    model: Any, seqs: LMSequences, settings: LMSettings, device: Any, readout: Readout
) -> Tensor:
    """``(B, T)`` values of ``readout`` at every response token of ``seqs`` (0 elsewhere).

    With gradients enabled everything goes through in one pass (the caller's batch is the
    training batch); without, in groups sized by ``inference_batch_size``.
    """
    if not packable(model, settings):
        return _padded_readout(model, seqs, settings, device, readout)
    packed = pack(seqs, max_tokens=settings.pack_tokens)
    count, width = packed.input_ids.shape
    per = count if torch.is_grad_enabled() else max(1, settings.token_budget // width)
    parts = []
    for start in range(0, count, per):
        states, targets, which = _packed(model, packed, slice(start, start + per), device)
        parts.append((which, readout(states, targets)))
    if len(parts) == 1:
        return packed.scatter(parts[0][1])
    values = torch.zeros(len(packed.row), dtype=parts[0][1].dtype, device=device)
    for which, part in parts:
        values = values.index_put((which.to(device),), part)
    return packed.scatter(values)


def _padded_readout(
    model: Any, seqs: LMSequences, settings: LMSettings, device: Any, readout: Readout
) -> Tensor:
    size = len(seqs) if torch.is_grad_enabled() else settings.inference_batch_size
    out = []
    for start in range(0, len(seqs), size):
        part = seqs if size >= len(seqs) else seqs.index(range(start, min(start + size, len(seqs))))
        states, targets, place = _padded(model, part, device)
        out.append(place.scatter(readout(states, targets)))
    width = max(o.shape[1] for o in out)
    return torch.cat([torch.nn.functional.pad(o, (0, width - o.shape[1])) for o in out])
