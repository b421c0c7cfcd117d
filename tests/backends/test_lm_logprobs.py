"""Chunked response log-probs (:mod:`constrained_align.backends.causal_lm.logprobs`).

``token_logprobs`` must be a drop-in replacement for the full-logits computation
``log_softmax(h W^T + b)[target]`` (``naive_token_logprobs``): same values and same gradients,
while never projecting more than ``chunk_size`` rows through the LM head at once.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from constrained_align.backends.causal_lm import logprobs as logprobs_module
from constrained_align.backends.causal_lm.logprobs import naive_token_logprobs, token_logprobs
from constrained_align.models.tiny import tiny_causal_lm

CHUNKS = [1, 3, 1000]  # one row per call, a ragged last chunk, one chunk for everything
PAD = 0


def _ragged_batch(vocab: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(3, 7)`` ids, attention mask and response mask: right padding, ragged responses.

    Row 0: 7 tokens, response at columns 2..6 (5 tokens). Row 1: 5 tokens, response 3..4 (2).
    Row 2: 6 tokens, response 2..5 (4). 11 scored positions in all.
    """
    g = torch.Generator().manual_seed(seed)
    attention = torch.tensor([[1] * 7, [1] * 5 + [0] * 2, [1] * 6 + [0]])
    ids = torch.randint(1, vocab, (3, 7), generator=g).masked_fill(attention == 0, PAD)
    response = torch.zeros(3, 7)
    response[0, 2:7] = 1
    response[1, 3:5] = 1
    response[2, 2:6] = 1
    return ids, attention, response


def _weights(shape: torch.Size, seed: int = 1) -> torch.Tensor:
    """Random per-token loss weights, so every scored position gets its own gradient."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("chunk", CHUNKS)
def test_linear_head_with_bias_matches_full_logits(chunk: int) -> None:
    """Values, and gradients w.r.t. hidden states, head weight and head bias, equal the naive path.

    A plain ``nn.Linear(H, V, bias=True)`` on random hidden states: the bias branch of
    ``_chunk_logits`` must add ``b`` before the log-softmax exactly as ``head(h)`` does. The loss
    ``Σ w_bt · logp_bt`` with random ``w`` makes each scored position's gradient distinct, so a
    row scored twice, missed or credited to the wrong state would show. Positions outside the
    response mask must be exactly zero.
    """
    torch.manual_seed(0)
    head = nn.Linear(8, 50, bias=True)
    with torch.no_grad():
        head.bias.normal_()  # a zero-initialised bias would hide a dropped bias term
    ids, _, response = _ragged_batch(50)
    hidden = torch.randn(3, 7, 8, requires_grad=True)
    w = _weights(response.shape)

    got = token_logprobs(hidden, ids, response, head, chunk_size=chunk)
    want = naive_token_logprobs(head(hidden), ids, response)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert torch.all(got[response == 0] == 0)

    params = [hidden, head.weight, head.bias]
    g_got = torch.autograd.grad((got * w).sum(), params)
    g_want = torch.autograd.grad((want * w).sum(), params)
    for a, b in zip(g_got, g_want):
        assert b.abs().max() > 0  # the comparison is not vacuous
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)

    with torch.no_grad():  # the un-checkpointed path gives the same values
        plain = token_logprobs(hidden, ids, response, head, chunk_size=chunk)
    torch.testing.assert_close(plain, want.detach(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("chunk", CHUNKS)
def test_tied_tiny_llama_matches_full_logits(chunk: int) -> None:
    """On the tied-embedding tiny Llama, values and all parameter gradients equal the naive path.

    The LM head's weight *is* the input embedding, so it receives gradient from two places (the
    embedding lookup and the projection); a chunked projection that detached or double-counted
    the head would change ``embed_tokens.weight.grad``. Gradients w.r.t. the decoder's last
    hidden states are compared as well.
    """
    model = tiny_causal_lm(0).float()
    head = model.get_output_embeddings()
    assert head.weight is model.model.embed_tokens.weight  # tied, as the docstring promises
    ids, attention, response = _ragged_batch(model.config.vocab_size)
    hidden = model.model(input_ids=ids, attention_mask=attention).last_hidden_state
    w = _weights(response.shape)

    got = token_logprobs(hidden, ids, response, head, chunk_size=chunk)
    want = naive_token_logprobs(head(hidden), ids, response)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)

    params = [hidden, *model.parameters()]
    g_got = torch.autograd.grad((got * w).sum(), params, retain_graph=True)
    g_want = torch.autograd.grad((want * w).sum(), params)
    for a, b in zip(g_got, g_want):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    assert g_want[0].abs().max() > 0 and g_want[1].abs().max() > 0


def test_hand_computed_log_softmax() -> None:
    """Exact values on a head whose log-softmax is known in closed form.

    ``H = 2``, ``V = 3``, ``W = [[0, 0], [ln 2, 0], [0, ln 3]]`` (rows are tokens), hidden states
    one-hot, so the logits are a column of ``W``:

    - ``h = e_0``: logits ``(0, ln 2, 0)`` → softmax ``(1, 2, 1)/4``.
    - ``h = e_1``: logits ``(0, 0, ln 3)`` → softmax ``(1, 1, 3)/5``.

    Sequence ``[0, 1, 2, 0]`` with hidden ``[e_0, e_1, e_0, e_1]`` and the response on positions
    1..3 scores token 1 from ``e_0`` (ln ½), token 2 from ``e_1`` (ln ⅗) and token 0 from ``e_0``
    (ln ¼). With bias ``b = (ln 2, 0, 0)``: ``e_0`` gives logits ``(ln 2, ln 2, 0)`` → softmax
    ``(2, 2, 1)/5``, so tokens 1 and 0 score ln ⅖; ``e_1`` gives ``(ln 2, 0, ln 3)`` →
    ``(2, 1, 3)/6``, so token 2 scores ln ½.
    """
    head = nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[0.0, 0.0], [math.log(2), 0.0], [0.0, math.log(3)]]))
    e0, e1 = [1.0, 0.0], [0.0, 1.0]
    hidden = torch.tensor([[e0, e1, e0, e1]])
    ids = torch.tensor([[0, 1, 2, 0]])
    response = torch.tensor([[0.0, 1.0, 1.0, 1.0]])
    want = torch.tensor([[0.0, math.log(1 / 2), math.log(3 / 5), math.log(1 / 4)]])
    for chunk in (1, 2, 8):
        got = token_logprobs(hidden, ids, response, head, chunk_size=chunk)
        torch.testing.assert_close(got, want, atol=1e-6, rtol=0)

    biased = nn.Linear(2, 3, bias=True)
    with torch.no_grad():
        biased.weight.copy_(head.weight)
        biased.bias.copy_(torch.tensor([math.log(2), 0.0, 0.0]))
    want_b = torch.tensor([[0.0, math.log(2 / 5), math.log(1 / 2), math.log(2 / 5)]])
    got_b = token_logprobs(hidden, ids, response, biased, chunk_size=2)
    torch.testing.assert_close(got_b, want_b, atol=1e-6, rtol=0)


def test_position_zero_in_the_response_mask_raises() -> None:
    """No token precedes position 0, so scoring it is a caller error, not a silent wrap-around.

    Without the check ``cols − 1 = −1`` would index the *last* hidden state of the row.
    """
    head = nn.Linear(4, 10)
    ids = torch.zeros(2, 5, dtype=torch.long)
    response = torch.zeros(2, 5)
    response[1, 0] = 1
    with pytest.raises(ValueError, match="position 0"):
        token_logprobs(torch.randn(2, 5, 4), ids, response, head)


def test_empty_response_mask_gives_zeros() -> None:
    """A batch with no response token scores nothing: an all-zero ``(B, L)`` float32 tensor."""
    head = nn.Linear(4, 10)
    ids = torch.zeros(2, 5, dtype=torch.long)
    out = token_logprobs(torch.randn(2, 5, 4), ids, torch.zeros(2, 5), head, chunk_size=3)
    assert out.shape == (2, 5) and out.dtype == torch.float32 and torch.all(out == 0)


@pytest.mark.parametrize("chunk", [1, 3, 4])
def test_no_call_projects_more_than_chunk_rows(chunk: int, monkeypatch) -> None:
    """The peak-memory argument: every head projection covers at most ``chunk_size`` rows.

    ``_chunk_logits`` is the only place the ``(n, V)`` logits exist; wrapping it records ``n``
    per call. With 11 scored rows there must be ``⌈11 / c⌉`` forward calls covering the 11 rows
    once each, none wider than ``c``; the backward pass must call it again the same number of
    times (it recomputes each chunk's logits instead of storing them).
    """
    rows_per_call: list[int] = []
    inner = logprobs_module._chunk_logits

    def spy(hidden, weight, bias):
        rows_per_call.append(hidden.shape[0])
        return inner(hidden, weight, bias)

    monkeypatch.setattr(logprobs_module, "_chunk_logits", spy)
    head = nn.Linear(8, 50)
    ids, _, response = _ragged_batch(50)
    hidden = torch.randn(3, 7, 8, requires_grad=True)
    out = token_logprobs(hidden, ids, response, head, chunk_size=chunk)
    calls = math.ceil(11 / chunk)
    assert len(rows_per_call) == calls and sum(rows_per_call) == 11
    assert max(rows_per_call) <= chunk
    out.sum().backward()
    assert len(rows_per_call) == 2 * calls  # recomputed in backward, never stored
    assert max(rows_per_call) <= chunk


@pytest.mark.parametrize("chunk", [1, 3])
def test_autograd_keeps_no_full_logits(chunk: int) -> None:
    """Nothing ``V`` wide and more than ``chunk`` rows tall is saved for the backward pass.

    A ``saved_tensors_hooks`` pack hook sees every tensor autograd keeps. The naive computation
    keeps its ``(B, L − 1, V)`` log-softmax (checked as a control, so the detector is known to
    work); the chunked one must keep none. The head weight (``V × H``
    or its transpose) is a parameter that lives anyway and is excluded.
    """
    vocab = 50
    head = nn.Linear(8, vocab)
    ids, _, response = _ragged_batch(vocab)
    hidden = torch.randn(3, 7, 8, requires_grad=True)

    def too_wide(run) -> list[tuple[int, ...]]:
        seen: list[tuple[int, ...]] = []

        weight_storage = head.weight.untyped_storage().data_ptr()

        def pack(t: torch.Tensor) -> torch.Tensor:
            wide = t.dim() >= 1 and t.shape[-1] == vocab and t.numel() > chunk * vocab
            if wide and t.untyped_storage().data_ptr() != weight_storage:
                seen.append(tuple(t.shape))
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            run()
        return seen

    assert too_wide(lambda: naive_token_logprobs(head(hidden), ids, response))  # control
    assert too_wide(lambda: token_logprobs(hidden, ids, response, head, chunk_size=chunk)) == []
