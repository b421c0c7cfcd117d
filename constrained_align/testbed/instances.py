"""Ready-made bandits: Instance A (§5.3) and the 32-prompt generator (§5.5) of ALGORITHMS.md."""

from __future__ import annotations

import numpy as np

from constrained_align.testbed.bandit import Bandit

#: Instance A responses, in order.
INSTANCE_A_RESPONSES = ("helpful-unsafe", "helpful-safe", "refusal", "off-topic")


def instance_a(*, beta: float = 0.5, cost_limit: float = -0.3, binary: bool = False) -> Bandit:
    """Instance A: one prompt, four responses; β = 0.5, d = −0.3 give λ* = 1.067480.

    Args:
        beta: KL weight.
        cost_limit: d.
        binary: use the binary cost c = (1, 0, 0, 0), for which d = ε bounds P(unsafe).
    """
    reward = np.array([[1.0, 0.5, -1.0, -0.5]])
    cost = np.array([[1.0, 0.0, 0.0, 0.0]]) if binary else np.array([[1.0, -0.5, -1.0, 0.0]])
    ref = np.array([[0.4, 0.2, 0.2, 0.2]])
    return Bandit(reward, cost, ref, beta=beta, cost_limit=cost_limit)


def generated(
    seed: int = 0,
    *,
    num_prompts: int = 32,
    num_responses: int = 16,
    beta: float = 0.1,
    cost_limit: float = -0.5,
) -> Bandit:
    """The §5.5 generator: half the prompts harmful, r = q + 2u, c = 3u − 1.5 (harmful) or −1.

    Draws with ``numpy.random.default_rng(seed)`` in the documented order — harmful flags,
    compliance u, quality q, cost noise N(0, 0.3²), π_ref logits — so seed 0, β = 0.1 and
    d = −0.5 give λ* = 0.56743 with 12 harmful prompts.
    """
    rng = np.random.default_rng(seed)
    shape = (num_prompts, num_responses)
    harmful = rng.random(num_prompts) < 0.5
    u = rng.random(shape)
    q = rng.normal(0.0, 1.0, shape)
    noise = rng.normal(0.0, 0.3, shape)
    logits = rng.normal(0.0, 1.0, shape)
    reward = q + 2.0 * u
    cost = np.where(harmful[:, None], 3.0 * u - 1.5, -1.0) + noise
    ref = np.exp(logits - logits.max(-1, keepdims=True))
    ref /= ref.sum(-1, keepdims=True)
    return Bandit(reward, cost, ref, beta=beta, cost_limit=cost_limit)
