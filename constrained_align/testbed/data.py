"""Preference data and tasks drawn from a bandit's ground truth (ALGORITHMS.md §5.1).

Population pairs: every unordered pair {y0 < y1} of each prompt with weight ρ_x μ(y0) μ(y1) and
soft labels better_id = σ(r(y1) − r(y0)), safer_id = σ(c(y0) − c(y1)) (Bradley-Terry,
temperature 1). Sampled pairs: ``pairs_per_prompt`` draws (y0, y1) iid from μ (pairs of equal
responses are dropped, as a dataset would have them) with Bernoulli labels. In both, the safety
label is is_safe(y) = 1[c ≤ 0], flipped with probability ``label_noise`` when sampling.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from constrained_align.backends.tabular import TabularSequences, as_table
from constrained_align.testbed.bandit import Bandit
from constrained_align.types import PairBatch


def population_pairs(bandit: Bandit, mu: np.ndarray | None = None) -> PairBatch:
    """All unordered response pairs of every prompt with exact weights and soft labels."""
    mu = bandit.ref_probs if mu is None else np.asarray(mu, dtype=np.float64)
    k, n = bandit.shape
    y0, y1 = np.triu_indices(n, k=1)
    prompt = np.repeat(np.arange(k), len(y0))
    r0, r1 = np.tile(y0, k), np.tile(y1, k)
    weight = bandit.prompt_weights[prompt] * mu[prompt, r0] * mu[prompt, r1]
    return _pairs(bandit, prompt, r0, r1, weight, soft=True)


def sampled_pairs(
    bandit: Bandit,
    pairs_per_prompt: int,
    *,
    seed: int = 0,
    mu: np.ndarray | None = None,
    label_noise: float = 0.0,
) -> PairBatch:
    """Finite pairs drawn from μ (π_ref by default) with Bernoulli labels, seeded."""
    mu = bandit.ref_probs if mu is None else np.asarray(mu, dtype=np.float64)
    rng = np.random.default_rng(seed)
    k, n = bandit.shape
    prompt = np.repeat(np.arange(k), pairs_per_prompt)
    r0 = np.array([rng.choice(n, p=mu[x]) for x in prompt])
    r1 = np.array([rng.choice(n, p=mu[x]) for x in prompt])
    keep = r0 != r1
    prompt, r0, r1 = prompt[keep], r0[keep], r1[keep]
    batch = _pairs(bandit, prompt, r0, r1, bandit.prompt_weights[prompt], soft=False, rng=rng)
    if label_noise > 0:
        for name in ("safe_0", "safe_1"):
            flip = torch.as_tensor(rng.random(len(prompt)) < label_noise)
            value = getattr(batch, name)
            setattr(batch, name, torch.where(flip, 1.0 - value, value))
    return batch


def _pairs(
    bandit: Bandit,
    prompt: np.ndarray,
    r0: np.ndarray,
    r1: np.ndarray,
    weight: np.ndarray,
    *,
    soft: bool,
    rng: np.random.Generator | None = None,
) -> PairBatch:
    r, c = bandit.reward, bandit.cost
    better = 1.0 / (1.0 + np.exp(-(r[prompt, r1] - r[prompt, r0])))
    safer = 1.0 / (1.0 + np.exp(-(c[prompt, r0] - c[prompt, r1])))
    if not soft:
        assert rng is not None
        better = (rng.random(len(prompt)) < better).astype(np.float64)
        safer = (rng.random(len(prompt)) < safer).astype(np.float64)
    p, a, b = (torch.as_tensor(v, dtype=torch.long) for v in (prompt, r0, r1))
    return PairBatch(
        response_0=TabularSequences(p, a),
        response_1=TabularSequences(p, b),
        better_id=as_table(better),
        safer_id=as_table(safer),
        safe_0=as_table((c[prompt, r0] <= 0).astype(np.float64)),
        safe_1=as_table((c[prompt, r1] <= 0).astype(np.float64)),
        weight=as_table(weight),
    )


@dataclass
class TabularTask:
    """A :class:`~constrained_align.types.Task` over a bandit: all prompts, one pair batch.

    Every step uses every prompt (full batch); the pair data is one batch per epoch.
    """

    pairs: PairBatch
    num_prompts: int
    samples_per_prompt: int = 16
    reference_samples: int = 512

    def prompts(self, step: int) -> torch.Tensor:
        return torch.arange(self.num_prompts)

    def pair_batches(self, epoch: int) -> list[PairBatch]:
        return [self.pairs]


__all__ = ["TabularTask", "population_pairs", "sampled_pairs"]
