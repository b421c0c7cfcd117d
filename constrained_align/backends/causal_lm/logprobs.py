"""Token log-probs of responses without materialising the (B, T, V) logits.

A causal LM's logits at position t − 1 score token t. For a response of T tokens over a
vocabulary of V (49k for SmolLM2), the full logits tensor of a batch is B·T·V floats, and
autograd keeps it (and its log-softmax) alive for the backward pass. Only the response
positions are needed, so :func:`token_logprobs` gathers the hidden states of those positions
and projects them through the LM head ``chunk_size`` rows at a time. Each chunk is wrapped in
activation checkpointing: the backward pass recomputes that chunk's logits instead of storing
them, so peak memory is ``chunk_size · V`` floats whatever the batch. Values and gradients equal
the naive computation (tested to 1e-5).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint


def _chunk_logprobs(hidden: Tensor, weight: Tensor, bias: Tensor | None, target: Tensor) -> Tensor:
    """``(n,)`` log softmax(h W^T + b)[target] for ``(n, H)`` hidden rows."""
    logits = hidden @ weight.T  # (n, V)
    if bias is not None:
        logits = logits + bias
    logits = logits.float()
    return logits.gather(-1, target.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def token_logprobs(
    hidden: Tensor,
    input_ids: Tensor,
    response_mask: Tensor,
    head: torch.nn.Linear,
    *,
    chunk_size: int = 1024,
) -> Tensor:
    """``(B, L)`` log π(x_t | x_<t) at the response positions, zero elsewhere.

    Args:
        hidden: ``(B, L, H)`` last hidden states of the decoder over the full sequences.
        input_ids: ``(B, L)`` token ids.
        response_mask: ``(B, L)`` 1 on the response tokens to score (never on position 0).
        head: the LM head (its ``weight`` is ``(V, H)``; tied embeddings work unchanged).
        chunk_size: rows projected at once; the peak logits memory is ``chunk_size × V``.
    """
    if bool(response_mask[:, 0].any()):
        raise ValueError("position 0 has no preceding token to predict it from")
    rows, cols = response_mask.nonzero(as_tuple=True)  # the scored positions, (n,) each
    states = hidden[rows, cols - 1]  # (n, H): the state before each scored token
    targets = input_ids[rows, cols]  # (n,)
    pieces = []
    for start in range(0, len(rows), chunk_size):
        part = slice(start, start + chunk_size)
        args = (states[part], head.weight, head.bias, targets[part])
        if torch.is_grad_enabled() and (states.requires_grad or head.weight.requires_grad):
            pieces.append(checkpoint(_chunk_logprobs, *args, use_reentrant=False))
        else:
            pieces.append(_chunk_logprobs(*args))
    values = torch.cat(pieces) if pieces else hidden.new_zeros(0, dtype=torch.float32)
    out = torch.zeros(response_mask.shape, dtype=values.dtype, device=hidden.device)
    return out.index_put((rows, cols), values)


def naive_token_logprobs(logits: Tensor, input_ids: Tensor, response_mask: Tensor) -> Tensor:
    """The reference computation from full ``(B, L, V)`` logits (used by the tests)."""
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    picked = logp.gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)  # (B, L − 1)
    out = torch.cat([torch.zeros_like(picked[:, :1]), picked], dim=1)
    return out * response_mask.to(out.dtype)
