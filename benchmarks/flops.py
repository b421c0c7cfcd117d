"""The hardware bound and the FLOP formulas of the cases.

**The hardware bound.** Each case lists the ``(M × K) @ (K × N)`` products its model does
(:class:`Gemm`: M = tokens per forward for training and scoring, M = batch size for a decode
step), and :class:`GemmMeter` times fp32 ``torch.matmul`` at those shapes in the same run; the
FLOP-weighted mean rate over the case's products, divided by the case's FLOP per unit (a token,
a text, a step), is the best figure the machine's GEMMs allow. The share of the bound is
measured / bound for rates and bound / measured for seconds. The FLOP formulas
(:func:`lora_train_gemms`, :func:`logprob_gemms`, :func:`decode_gemms`) count the linear layers
of the transformer blocks (N = Σ in·out, the non-embedding weights; norms, biases and LoRA's own
rank-r products are left out) and the LM head; attention scores (QKᵀ and the weighted sum of V)
are left out everywhere, so the bound is a little optimistic about the peers and us alike.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

# ---------------------------------------------------------------------------------- GEMM bound


@dataclass(frozen=True)
class Gemm:
    """``count`` fp32 products ``(m × k) @ (k × n)``: 2·m·k·n·count FLOP."""

    m: float
    k: int
    n: int
    count: float = 1.0

    @property
    def flops(self) -> float:
        """FLOP of all ``count`` products."""
        return 2.0 * self.m * self.k * self.n * self.count


def total_flops(gemms: Iterable[Gemm]) -> float:
    """FLOP of a list of products."""
    return float(sum(g.flops for g in gemms))


class GemmMeter:
    """Times fp32 ``torch.matmul`` at given shapes (each shape once per run, then cached).

    Args:
        min_seconds: least time spent on one shape (at least three products).
        row_cap: products of more rows are timed at this many rows: the rate no longer changes
            there, only the time it takes to measure it (the 8192 × 49152 logits would take
            seconds per product).
    """

    def __init__(self, min_seconds: float, row_cap: int = 2048) -> None:
        self.min_seconds = min_seconds
        self.row_cap = row_cap
        self.rates: dict[tuple[int, int, int], float] = {}

    def rate(self, m: float, k: int, n: int) -> float:
        """FLOP/s of ``(m × k) @ (k × n)`` on this machine."""
        shape = (max(1, min(round(m), self.row_cap)), k, n)
        if shape not in self.rates:
            a, b = torch.randn(shape[0], k), torch.randn(k, n)
            with torch.no_grad():
                torch.matmul(a, b)  # warm-up
                calls, started = 0, time.perf_counter()
                while calls < 3 or time.perf_counter() - started < self.min_seconds:
                    torch.matmul(a, b)
                    calls += 1
                elapsed = time.perf_counter() - started
            self.rates[shape] = 2.0 * shape[0] * k * n * calls / elapsed
        return self.rates[shape]

    def weighted_rate(self, gemms: Sequence[Gemm]) -> float:
        """The FLOP-weighted mean rate (FLOP/s) over ``gemms``."""
        flops = total_flops(gemms)
        return sum(g.flops * self.rate(g.m, g.k, g.n) for g in gemms) / flops

    def bound(self, gemms: Sequence[Gemm], units: float) -> float:
        """Units per second at the GEMM rate: rate / (FLOP per unit)."""
        return self.weighted_rate(gemms) / (total_flops(gemms) / units)


# ---------------------------------------------------------------------------------- FLOP formulas


@dataclass(frozen=True)
class ModelDims:
    """The shapes a transformer's FLOP count needs.

    Attributes:
        linears: ``(in, out)`` of every linear layer of the blocks (no embedding, no LM head,
            no LoRA adapter, no score head).
        hidden: H, the LM head's input width.
        vocab: V, the LM head's output width (0 for an encoder without a head).
    """

    linears: tuple[tuple[int, int], ...]
    hidden: int
    vocab: int

    @property
    def n_linear(self) -> int:
        """N_nonembedding = Σ in·out over the blocks' linear layers."""
        return sum(k * n for k, n in self.linears)


def model_dims(model: nn.Module) -> ModelDims:
    """:class:`ModelDims` of a causal LM (peft-wrapped or not) or an encoder backbone."""
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    linears = tuple(
        (m.in_features, m.out_features)
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear) and m is not head and "lora_" not in name
    )
    if head is None:
        return ModelDims(linears, int(model.config.hidden_size), 0)
    vocab, hidden = head.weight.shape
    return ModelDims(linears, int(hidden), int(vocab))


def forward_gemms(dims: ModelDims, m: float, count: float) -> list[Gemm]:
    """``count`` forwards of the blocks over ``m`` tokens each: 2·N FLOP per token."""
    return [Gemm(m, k, n, count) for k, n in dims.linears]


def input_grad_gemms(dims: ModelDims, m: float, count: float) -> list[Gemm]:
    """The input gradients of those forwards, ``(m × out) @ (out × in)``: 2·N FLOP per token."""
    return [Gemm(m, n, k, count) for k, n in dims.linears]


def head_gemms(dims: ModelDims, m: float, count: float, *, backward: bool) -> list[Gemm]:
    """The LM head on ``m`` scored positions per pass: 2·H·V forward; with ``backward``,
    4·H·V more (the logits recomputed, 2·H·V, and the input gradient, 2·H·V)."""
    forward = Gemm(m, dims.hidden, dims.vocab, count)
    if not backward:
        return [forward]
    return [forward, forward, Gemm(m, dims.vocab, dims.hidden, count)]


def lora_train_gemms(dims: ModelDims, tokens: float, scored: float, passes: float) -> list[Gemm]:
    """A LoRA forward+backward: 4·N per token (2·N forward, 2·N input gradients; the frozen
    base needs no weight gradient) plus 6·H·V per scored token (2·H·V forward, 4·H·V backward),
    in ``passes`` passes of ``tokens`` tokens and ``scored`` response tokens each."""
    return [
        *forward_gemms(dims, tokens, passes),
        *input_grad_gemms(dims, tokens, passes),
        *head_gemms(dims, scored, passes, backward=True),
    ]


def logprob_gemms(dims: ModelDims, tokens: float, scored: float, passes: float) -> list[Gemm]:
    """A log-prob forward: 2·N per token plus 2·H·V per scored token (only the response
    positions need the head), in ``passes`` passes."""
    return [*forward_gemms(dims, tokens, passes), *head_gemms(dims, scored, passes, backward=False)]


def decode_gemms(
    dims: ModelDims, batch: float, prompt_tokens: float, new_tokens: float, batches: float
) -> list[Gemm]:
    """Sampling ``batches`` batches of ``batch`` rows: the prefill, 2·N per prompt token
    (M = ``prompt_tokens`` per batch), then 2·N + 2·H·V per new token at M = ``batch``
    (``new_tokens`` per batch; attention over the KV cache left out)."""
    steps = batches * new_tokens / batch
    return [
        *forward_gemms(dims, prompt_tokens, batches),
        *forward_gemms(dims, batch, steps),
        *head_gemms(dims, batch, steps, backward=False),
    ]
