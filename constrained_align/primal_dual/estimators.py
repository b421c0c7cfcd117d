"""Constraint estimators: where Ĵ_C, the estimate of E[c] under the current policy, comes from.

Kept apart from the multiplier rules (ALGORITHMS.md §3.0). Three on-policy estimators consume
per-sample raw costs (:class:`WindowMean`, :class:`BatchMean`, :class:`EMA`); they hold plain Python
floats so that ``state_dict()`` is JSON-serialisable and reloads bit-identically. The off-policy
:class:`ImportanceEstimate` reweights scored reference samples to give E_{π_λ}[c] at any λ without
training, which is what the exact (one-shot) dual solve and warm starts need.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

ArrayLike = torch.Tensor | np.ndarray | Sequence[float]


def _flat_floats(x: ArrayLike, what: str) -> list[float]:
    """Flatten a tensor / array / sequence to a list of finite Python floats."""
    if isinstance(x, torch.Tensor):
        out = x.detach().to(device="cpu", dtype=torch.float64).reshape(-1).tolist()
    else:
        out = np.asarray(x, dtype=np.float64).reshape(-1).tolist()
    if not all(math.isfinite(v) for v in out):
        # A single NaN cost would make λ NaN forever; reject it at the door.
        raise ValueError(f"{what} must be finite")
    return out


def _batch(values: ArrayLike, weights: ArrayLike | None) -> tuple[list[float], list[float]]:
    """Validate one batch of per-sample values and weights (1.0 each when ``weights`` is None)."""
    vals = _flat_floats(values, "costs")
    if weights is None:
        return vals, [1.0] * len(vals)
    wts = _flat_floats(weights, "weights")
    if len(wts) != len(vals):
        raise ValueError(f"got {len(vals)} values but {len(wts)} weights")
    if any(w < 0 for w in wts):
        raise ValueError("weights must be >= 0")
    return vals, wts


def _weighted_mean(values: Sequence[float], weights: Sequence[float], what: str) -> float:
    if not values:
        raise ValueError(f"{what} is empty: observe some costs before asking for its value")
    total = math.fsum(weights)
    if total <= 0:
        raise ValueError(f"{what} has zero total weight")
    # fsum: exact summation, so the mean does not depend on the order samples were added in.
    return math.fsum(v * w for v, w in zip(values, weights)) / total


class WindowMean:
    """Mean of the last ``size`` per-sample costs (Safe RLHF's cost window, ALGORITHMS.md §3.1).

    With weights, the value is the weighted mean over the window, each sample keeping the weight
    it was added with; samples added without weights have weight 1.

    Args:
        size: Window length N (Safe RLHF: 128).
    """

    def __init__(self, size: int = 128):
        if int(size) != size or size < 1:
            raise ValueError(f"size must be an integer >= 1, got {size}")
        self.size = int(size)
        self._values: deque[float] = deque(maxlen=self.size)
        self._weights: deque[float] = deque(maxlen=self.size)

    def add(self, values: ArrayLike, weights: ArrayLike | None = None) -> None:
        """Append per-sample costs (any shape, flattened), evicting the oldest beyond ``size``.

        Args:
            values: Per-sample raw costs.
            weights: Optional non-negative per-sample weights, same number as ``values``.
        """
        vals, wts = _batch(values, weights)
        self._values.extend(vals)
        self._weights.extend(wts)

    def value(self) -> float:
        """Weighted mean over the window.

        Raises:
            ValueError: If the window is empty or its weights sum to 0.
        """
        return _weighted_mean(self._values, self._weights, "WindowMean window")

    def __len__(self) -> int:
        return len(self._values)

    def state_dict(self) -> dict[str, Any]:
        """Return the window contents, oldest first."""
        return {"values": list(self._values), "weights": list(self._weights)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the window (keeping the newest ``size`` entries if it was saved larger)."""
        self._values = deque((float(v) for v in state["values"]), maxlen=self.size)
        self._weights = deque((float(w) for w in state["weights"]), maxlen=self.size)


class BatchMean:
    """Weighted mean of the most recent batch only."""

    def __init__(self) -> None:
        self._values: list[float] = []
        self._weights: list[float] = []

    def add(self, values: ArrayLike, weights: ArrayLike | None = None) -> None:
        """Replace the stored batch; arguments as in :meth:`WindowMean.add`."""
        self._values, self._weights = _batch(values, weights)

    def value(self) -> float:
        """Weighted mean of the last batch; raises ValueError before any batch."""
        return _weighted_mean(self._values, self._weights, "BatchMean batch")

    def __len__(self) -> int:
        """Number of samples in the last batch."""
        return len(self._values)

    def state_dict(self) -> dict[str, Any]:
        """Return the last batch."""
        return {"values": list(self._values), "weights": list(self._weights)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the last batch."""
        self._values = [float(v) for v in state["values"]]
        self._weights = [float(w) for w in state["weights"]]


class EMA:
    """Exponential moving average of batch means: ``v ← m·v + (1 − m)·batch_mean``.

    The first batch sets ``v`` to its mean (no bias towards 0).

    Args:
        momentum: m in [0, 1); 0 reduces to :class:`BatchMean`.
    """

    def __init__(self, momentum: float = 0.9):
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.momentum = float(momentum)
        self._value: float | None = None
        self._batches = 0

    def add(self, values: ArrayLike, weights: ArrayLike | None = None) -> None:
        """Fold one batch's weighted mean in; arguments as in :meth:`WindowMean.add`."""
        vals, wts = _batch(values, weights)
        mean = _weighted_mean(vals, wts, "EMA batch")
        if self._value is None:
            self._value = mean
        else:
            self._value = self.momentum * self._value + (1.0 - self.momentum) * mean
        self._batches += 1

    def value(self) -> float:
        """Current average; raises ValueError before any batch."""
        if self._value is None:
            raise ValueError("EMA is empty: observe some costs before asking for its value")
        return self._value

    def __len__(self) -> int:
        """Number of batches folded in."""
        return self._batches

    def state_dict(self) -> dict[str, Any]:
        """Return the average (None before any batch) and the batch count."""
        return {"value": self._value, "batches": self._batches}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the average and the batch count."""
        self._value = None if state["value"] is None else float(state["value"])
        self._batches = int(state["batches"])


def _as_float64(x: torch.Tensor | np.ndarray | Sequence[float]) -> torch.Tensor:
    """Copy numpy / torch / nested-list scores to a float64 CPU tensor (no autograd)."""
    t = x.detach() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    # copy=True: later in-place edits of the caller's tensor must not change our estimate.
    return t.to(device="cpu", dtype=torch.float64, copy=True)


def normalised_log_weights(
    weights: torch.Tensor | np.ndarray | None, shape: tuple[int, int]
) -> torch.Tensor:
    """Return log w̃ of shape (K, M): base weights normalised to sum 1 per prompt.

    Uniform (−log M) when ``weights`` is None; −inf where a weight is 0, so the sample drops out
    of every softmax.
    """
    k, m = shape
    if weights is None:
        return torch.full((k, m), -math.log(m), dtype=torch.float64)
    w = _as_float64(weights)
    if w.dim() == 1 and k == 1:
        w = w.unsqueeze(0)
    if tuple(w.shape) != (k, m):
        raise ValueError(f"weights must have shape {(k, m)}, got {tuple(w.shape)}")
    if not torch.isfinite(w).all() or (w < 0).any():
        raise ValueError("weights must be finite and >= 0")
    total = w.sum(dim=-1, keepdim=True)  # (K, 1)
    if (total <= 0).any():
        raise ValueError("every prompt needs at least one sample with positive weight")
    return torch.log(w / total)


def normalised_prompt_weights(
    prompt_weights: torch.Tensor | np.ndarray | None, k: int
) -> torch.Tensor:
    """Return ρ of shape (K,), summing to 1; uniform when ``prompt_weights`` is None."""
    if prompt_weights is None:
        return torch.full((k,), 1.0 / k, dtype=torch.float64)
    rho = _as_float64(prompt_weights)
    if tuple(rho.shape) != (k,):
        raise ValueError(f"prompt_weights must have shape {(k,)}, got {tuple(rho.shape)}")
    if not torch.isfinite(rho).all() or (rho < 0).any() or rho.sum() <= 0:
        raise ValueError("prompt_weights must be finite, >= 0 and not all 0")
    return rho / rho.sum()


class ImportanceEstimate:
    """Self-normalised importance estimate of E_{π_λ}[c] from scored reference samples.

    For K prompts with M reference samples each (scores r_xj, c_xj; optional base weights w_xj, e.g.
    π_ref probabilities when all responses are enumerated; prompt weights ρ_x)::

        π̂_λ(j | x) = softmax_j((r_xj − λ c_xj)/β + log w̃_xj),   w̃_x = w_x / Σ_j w_xj
        C(λ)       = Σ_x ρ_x Σ_j π̂_λ(j | x) c_xj

    which is the Gibbs policy π_λ ∝ π_ref·exp((r − λc)/β) of ALGORITHMS.md §1.3 restricted to the
    samples, and C(λ) − d = −D̂'(λ) for the plug-in dual of CAN (Huang et al., arXiv 2405.19544;
    ALGORITHMS.md §3.6). Without ``weights`` the samples are taken as draws from π_ref (w̃ = 1/M).

    Args:
        reward: (K, M) reward scores; a 1-D (M,) input is one prompt. numpy or torch.
        cost: (K, M) cost scores, same shape.
        beta: KL weight β > 0.
        weights: Optional (K, M) non-negative base weights; each prompt needs a positive one.
        prompt_weights: Optional (K,) non-negative prompt weights ρ (normalised here); uniform
            by default.

    Raises:
        ValueError: On mismatched shapes, non-finite scores, β ≤ 0 or invalid weights.
    """

    def __init__(
        self,
        reward: torch.Tensor | np.ndarray,
        cost: torch.Tensor | np.ndarray,
        *,
        beta: float,
        weights: torch.Tensor | np.ndarray | None = None,
        prompt_weights: torch.Tensor | np.ndarray | None = None,
    ):
        if not beta > 0:
            raise ValueError(f"beta must be > 0, got {beta}")
        r, c = _as_float64(reward), _as_float64(cost)
        if r.dim() == 1:
            r, c = r.unsqueeze(0), c.unsqueeze(0)
        if r.dim() != 2 or r.shape != c.shape:
            raise ValueError(
                f"reward and cost must both be (K, M), got {tuple(r.shape)} and {tuple(c.shape)}"
            )
        if not (torch.isfinite(r).all() and torch.isfinite(c).all()):
            raise ValueError("reward and cost scores must be finite")
        self.beta = float(beta)
        self.reward, self.cost = r, c  # (K, M)
        # (K, M) log w̃, -inf where w = 0; (K,) ρ summing to 1.
        self.log_weights = normalised_log_weights(weights, tuple(r.shape))
        self.prompt_weights = normalised_prompt_weights(prompt_weights, r.shape[0])

    def _logits(self, lam: float) -> torch.Tensor:
        return (self.reward - float(lam) * self.cost) / self.beta + self.log_weights  # (K, M)

    def __call__(self, lam: float) -> float:
        """Return C(λ) = Σ_x ρ_x E_{π̂_λ(·|x)}[c], non-increasing in λ."""
        probs = torch.softmax(self._logits(lam), dim=-1)  # (K, M)
        per_prompt = (probs * self.cost).sum(dim=-1)  # (K,)
        return float((self.prompt_weights * per_prompt).sum())

    def log_partition(self, lam: float) -> float:
        """Return β Σ_x ρ_x logsumexp_j((r_xj − λ c_xj)/β + log w̃_xj).

        This is β·E_x log Ẑ_λ(x); the plug-in dual is ``log_partition(λ) + λ·d``.
        """
        lse = torch.logsumexp(self._logits(lam), dim=-1)  # (K,)
        return self.beta * float((self.prompt_weights * lse).sum())

    def min_cost(self) -> float:
        """Return Σ_x ρ_x min_j c_xj over samples with positive weight (the Slater bound).

        The plug-in dual has a finite minimiser only when the cost limit d > ``min_cost()``.
        """
        masked = torch.where(torch.isfinite(self.log_weights), self.cost, math.inf)  # (K, M)
        return float((self.prompt_weights * masked.min(dim=-1).values).sum())
