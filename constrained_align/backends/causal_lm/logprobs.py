"""Token log-probs of responses without materialising the (B, T, V) logits.

A causal LM's logits at position t − 1 score token t. For a response of T tokens over a
vocabulary of V (49k for SmolLM2), the full logits tensor of a batch is B·T·V floats, and
autograd keeps it (and its log-softmax) alive for the backward pass. Only the response
positions are needed, so :func:`token_logprobs` gathers the hidden states of those positions
and projects them through the LM head ``chunk_size`` rows at a time, in one autograd function
(:class:`_ChunkedLogProbs`) that keeps only the hidden states and one log-sum-exp per row for
the backward pass. The backward recomputes each chunk's logits into one buffer and turns it in
place into the gradient of the logits, ``g · (onehot(target) − softmax)``, so the peak is a
single ``chunk_size × V`` buffer whatever the batch. Values and gradients equal the naive
computation (tested to 1e-5).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def _chunk_logits(states: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``(n, V)`` float32 logits ``h W^T + b`` of ``(n, H)`` states (the only place they exist)."""
    logits = states @ weight.T
    if bias is not None:
        logits += bias
    return logits.float()


class _ChunkedLogProbs(torch.autograd.Function):
    """``(n,)`` log softmax(states W^T + b)[targets], ``chunk`` rows of logits at a time."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, states: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor, chunk: int
    ) -> Tensor:
        out = torch.empty(len(targets), dtype=torch.float32, device=states.device)
        lse = torch.empty_like(out)
        for start in range(0, len(targets), chunk):
            part = slice(start, start + chunk)
            logits = _chunk_logits(states[part], weight, bias)
            lse[part] = torch.logsumexp(logits, dim=-1)
            out[part] = logits.gather(-1, targets[part, None]).squeeze(-1) - lse[part]
        ctx.save_for_backward(states, weight, bias, targets, lse)
        ctx.chunk = chunk
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        states, weight, bias, targets, lse = ctx.saved_tensors
        need_states, need_weight, need_bias = ctx.needs_input_grad[:3]
        grad_states = torch.empty_like(states) if need_states else None
        grad_weight = torch.zeros_like(weight) if need_weight else None
        grad_bias = torch.zeros_like(bias) if need_bias and bias is not None else None
        for start in range(0, len(targets), ctx.chunk):
            part = slice(start, start + ctx.chunk)
            g = grad_out[part].float()
            # d out_i / d logits_ij = 1[j = target_i] − softmax_ij, scaled by g_i, in place.
            grad = _chunk_logits(states[part], weight, bias)
            grad.sub_(lse[part, None]).exp_().mul_(-g[:, None])
            grad.scatter_add_(-1, targets[part, None], g[:, None])
            grad = grad.to(states.dtype)
            if grad_states is not None:
                grad_states[part] = grad @ weight
            if grad_weight is not None:
                grad_weight.addmm_(grad.T, states[part])
            if grad_bias is not None:
                grad_bias += grad.sum(0)
        return grad_states, grad_weight, grad_bias, None, None


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
    values = gathered_logprobs(states, input_ids[rows, cols], head, chunk_size=chunk_size)
    out = torch.zeros(response_mask.shape, dtype=values.dtype, device=hidden.device)
    return out.index_put((rows, cols), values)


def gathered_logprobs(
    states: Tensor, targets: Tensor, head: torch.nn.Linear, *, chunk_size: int = 1024
) -> Tensor:
    """``(n,)`` log softmax(head(states))[targets], ``chunk_size`` rows through the head at a
    time, each chunk's logits recomputed in the backward pass instead of stored.

    Args:
        states: ``(n, H)`` hidden states, each the one that predicts its target.
        targets: ``(n,)`` the token each state predicts.
        head: the LM head.
        chunk_size: rows projected at once.
    """
    if len(targets) == 0:
        return states.new_zeros(0, dtype=torch.float32)
    return _ChunkedLogProbs.apply(states, head.weight, head.bias, targets, chunk_size)


def naive_token_logprobs(logits: Tensor, input_ids: Tensor, response_mask: Tensor) -> Tensor:
    """The reference computation from full ``(B, L, V)`` logits (used by the tests)."""
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    picked = logp.gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)  # (B, L − 1)
    out = torch.cat([torch.zeros_like(picked[:, :1]), picked], dim=1)
    return out * response_mask.to(out.dtype)
