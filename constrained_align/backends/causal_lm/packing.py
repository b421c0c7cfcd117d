"""Padding-free rows with shared prompts: each prompt once, all its responses after it.

A batch of (prompt, response) sequences usually repeats prompts — the two responses of a
preference pair, the G samples of a prompt in a rollout — and is padded to its longest row. A
packed batch lays the sequences out in rows of at most ``max_tokens`` tokens with no padding
and each distinct prompt once::

    row: [ prompt A | response A1 | response A2 | prompt B | response B1 | ... ]
    pos:   0 .. P-1   P .. P+R1-1   P .. P+R2-1   0 .. Q-1   Q .. ...

A 4-D attention mask lets every token see only its own group's prompt and earlier tokens of
its own segment (a response never sees the other responses of its prompt), and position ids
restart at each prompt, so every response is computed exactly as it would be alone (to float
rounding: tested to 1e-5). The log-prob of response token t is read from the hidden state
before it — the prompt's last token for t = 0 — which :attr:`Packed.source` records.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from constrained_align.backends.causal_lm.sequences import LMSequences


@dataclass
class Placement:
    """Where ``n`` per-token values go in ``(B, T)`` response coordinates."""

    seq: Tensor
    col: Tensor
    shape: tuple[int, int]

    def scatter(self, values: Tensor) -> Tensor:
        """``(n,)`` values → ``(B, T)``, 0 elsewhere."""
        out = values.new_zeros(self.shape)
        return out.index_put((self.seq.to(values.device), self.col.to(values.device)), values)


@dataclass
class Packed:
    """Sequences packed into rows (see the module docstring).

    Attributes:
        input_ids: ``(R, N)`` token ids (rows right-padded only to the longest row).
        position_ids: ``(R, N)`` positions, restarting at each prompt.
        group: ``(R, N)`` prompt group of each token, -1 on padding.
        segment: ``(R, N)`` 0 on a prompt, k on the k-th response of its group.
        row, target, source: ``(n,)`` for each scored response token: its row, its column,
            and the column of the hidden state that predicts it.
        seq, col: ``(n,)`` where each scored token goes: the input sequence and the response
            column (response coordinates, as :meth:`LMSequences.to_response`).
        shape: ``(B, T)`` of outputs in response coordinates.
    """

    input_ids: Tensor
    position_ids: Tensor
    group: Tensor
    segment: Tensor
    row: Tensor
    target: Tensor
    source: Tensor
    seq: Tensor
    col: Tensor
    shape: tuple[int, int]

    def attention_mask(self, rows: slice, dtype: torch.dtype | None = None) -> Tensor:
        """``(r, 1, N, N)`` mask of ``rows``: a token attends to its group's prompt and to the
        earlier tokens of its own segment. Boolean (True = attend) for SDPA; with a float
        ``dtype``, additive (0 or the dtype's minimum) for eager attention. Padding attends to
        itself (a query with no key at all would give NaN)."""
        group, segment = self.group[rows], self.segment[rows]
        n = group.shape[1]
        q_group, k_group = group[:, :, None], group[:, None, :]
        q_seg, k_seg = segment[:, :, None], segment[:, None, :]
        causal = torch.ones(n, n, dtype=torch.bool).tril()
        allowed = (q_group == k_group) & (q_group >= 0) & causal & ((k_seg == 0) | (k_seg == q_seg))
        allowed |= torch.eye(n, dtype=torch.bool)  # no row without a key (padding)
        allowed = allowed[:, None]
        if dtype is None or dtype == torch.bool:
            return allowed
        zero = torch.zeros((), dtype=dtype)
        return torch.where(allowed, zero, torch.finfo(dtype).min)

    def scatter(self, values: Tensor) -> Tensor:
        """``(n,)`` per-scored-token values → ``(B, T)`` in response coordinates (0 elsewhere)."""
        return Placement(self.seq, self.col, self.shape).scatter(values)


def _parts(seqs: LMSequences) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, response ids) of each row."""
    parts = []
    for ids, mask, response in zip(seqs.input_ids, seqs.attention_mask, seqs.response_mask):
        real = ids[mask.bool()].tolist()
        start = int(response[mask.bool()].argmax()) if bool(response.any()) else len(real)
        if start == 0:
            raise ValueError("a packed sequence needs a prompt before its response")
        parts.append((real[:start], real[start:]))
    return parts


def pack(seqs: LMSequences, *, max_tokens: int = 1024) -> Packed:
    """Pack ``seqs`` (right-padded rows of prompt then response) by shared prompt.

    Args:
        seqs: the sequences; rows with identical prompt tokens share one copy of the prompt.
        max_tokens: the most tokens per packed row (a longer prompt group gets a row alone).

    Returns:
        The packed batch.
    """
    parts = _parts(seqs)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, (prompt, _) in enumerate(parts):
        groups.setdefault(tuple(prompt), []).append(i)
    rows: list[list[tuple[int, int, int, int]]] = [[]]  # (token, position, group, segment)
    scored: list[tuple[int, int, int, int, int]] = []  # (row, target, source, seq, col)
    for g, (prompt, members) in enumerate(groups.items()):
        size = len(prompt) + sum(len(parts[i][1]) for i in members)
        if rows[-1] and len(rows[-1]) + size > max_tokens:
            rows.append([])
        row = rows[-1]
        r = len(rows) - 1
        row.extend((tok, pos, g, 0) for pos, tok in enumerate(prompt))
        prompt_end = len(row) - 1
        for k, i in enumerate(members, 1):
            response = parts[i][1]
            base = len(row)
            row.extend((tok, len(prompt) + t, g, k) for t, tok in enumerate(response))
            for t in range(len(response)):
                scored.append((r, base + t, prompt_end if t == 0 else base + t - 1, i, t))
    width = max(len(row) for row in rows)
    fields = torch.zeros(4, len(rows), width, dtype=torch.long)
    fields[2:] = -1  # padding: no group, no segment
    for r, row in enumerate(rows):
        if row:
            fields[:, r, : len(row)] = torch.tensor(row, dtype=torch.long).T
    index = torch.tensor(scored, dtype=torch.long).reshape(-1, 5).T
    lengths = [len(response) for _, response in parts]
    return Packed(
        input_ids=fields[0],
        position_ids=fields[1],
        group=fields[2],
        segment=fields[3],
        row=index[0],
        target=index[1],
        source=index[2],
        seq=index[3],
        col=index[4],
        shape=(len(parts), max(lengths, default=0)),
    )
