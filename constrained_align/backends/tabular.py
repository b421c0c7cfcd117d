"""The tabular policy backend of the closed-form testbed.

A policy is a (K, N) table of logits, one row per prompt, and a response is one "token": the
sequence log-prob is the log-softmax of the row. Critics are one value per prompt (the value of
the state before the single response token). Everything is float64 so the testbed can check the
algorithms to ~1e-6.

Two modes, chosen when the backend is built:

- ``population``: :meth:`TabularPolicy.sample` enumerates every response of every prompt with
  weight ρ_x·π(y|x), so every weighted mean an algorithm takes is an exact expectation.
- ``sampled``: it draws ``num_samples`` responses per prompt with a seeded generator and
  weight 1.

Rows always come prompt-major: the samples of prompt ``i`` of the batch are rows
``i*n .. (i+1)*n - 1`` (``n = N`` in population mode), so ``values.view(P, n)`` is a grid.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from constrained_align.config import TESTBED_LR, OptimConfig
from constrained_align.types import LogProbs, Samples, check_finite

DTYPE = torch.float64
Mode = Literal["population", "sampled"]


@dataclass
class TabularSequences:
    """(prompt, response) index pairs: ``prompt`` and ``response`` are ``(B,)`` long tensors."""

    prompt: Tensor
    response: Tensor

    def __len__(self) -> int:
        return int(self.prompt.shape[0])

    def index(self, rows: Tensor) -> TabularSequences:
        return TabularSequences(self.prompt[rows], self.response[rows])


def as_table(array: Any) -> Tensor:
    """A numpy or torch (K, N) array as a float64 tensor."""
    return torch.as_tensor(np.asarray(array, dtype=np.float64), dtype=DTYPE).clone()


class TabularPolicy:
    """Tabular logits θ[x, y] and per-prompt value heads, trained by the algorithms' closures.

    Args:
        ref_probs: (K, N) reference policy π_ref (rows sum to 1, full support).
        mode: ``population`` or ``sampled`` (see module docstring).
        optim: optimizer settings (Adam or SGD; critics get ``critic_lr``).
        prompt_weights: (K,) ρ; uniform when None.
        seed: seed of the sampling generator.
    """

    def __init__(
        self,
        ref_probs: Any,
        *,
        mode: Mode = "population",
        optim: OptimConfig | None = None,
        prompt_weights: Any = None,
        seed: int = 0,
    ) -> None:
        ref = as_table(ref_probs)
        if (ref <= 0).any():
            raise ValueError("ref_probs must give every response positive probability")
        self.ref_logp = torch.log(ref / ref.sum(-1, keepdim=True))
        self.num_prompts, self.num_responses = ref.shape
        rho = (
            torch.ones(self.num_prompts, dtype=DTYPE)
            if prompt_weights is None
            else (as_table(prompt_weights).reshape(-1))
        )
        self.rho = rho / rho.sum()
        self.mode: Mode = mode
        self.optim_config = (optim or OptimConfig()).resolved(lr=TESTBED_LR, critic_lr=TESTBED_LR)
        self.generator = torch.Generator().manual_seed(seed)
        self.logits = torch.nn.Parameter(self.ref_logp.clone())
        self.value_heads = {
            name: torch.nn.Parameter(torch.zeros(self.num_prompts, dtype=DTYPE))
            for name in ("reward", "cost")
        }
        self.optimizer = self._make_optimizer()
        self.steps = 0

    def _make_optimizer(self) -> torch.optim.Optimizer:
        cfg = self.optim_config
        groups = [
            {"params": [self.logits], "lr": cfg.lr},
            {"params": list(self.value_heads.values()), "lr": cfg.critic_lr},
        ]
        if cfg.name == "sgd":
            return torch.optim.SGD(groups, weight_decay=cfg.weight_decay)
        if cfg.name == "adamw":
            return torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
        return torch.optim.Adam(groups, weight_decay=cfg.weight_decay)

    # ---- the PolicyBackend interface -------------------------------------------------------

    def all_prompts(self) -> Tensor:
        """``(K,)`` indices of every prompt."""
        return torch.arange(self.num_prompts)

    def sample(
        self, prompts: Tensor, num_samples: int, *, reference: bool = False, seed: int | None = None
    ) -> Samples:
        """Responses per prompt from the policy (or reference), prompt-major."""
        prompts = torch.as_tensor(prompts, dtype=torch.long)
        logp = self.ref_logp if reference else self.log_probs_table().detach()
        rho = self.rho[prompts] / self.rho[prompts].sum()
        if self.mode == "population":
            n = self.num_responses
            response = torch.arange(n).repeat(len(prompts))
            prompt = prompts.repeat_interleave(n)
            weight = (rho.repeat_interleave(n) * logp[prompt, response].exp()).to(DTYPE)
        else:
            gen = self.generator if seed is None else torch.Generator().manual_seed(seed)
            draws = torch.multinomial(
                logp[prompts].exp(), num_samples, replacement=True, generator=gen
            )  # (P, n)
            n = num_samples
            prompt = prompts.repeat_interleave(n)
            response = draws.reshape(-1)
            weight = rho.repeat_interleave(n) * len(prompts)
        seqs = TabularSequences(prompt, response)
        group = torch.arange(len(prompts)).repeat_interleave(n)
        return Samples(
            sequences=seqs,
            group=group,
            weight=weight,
            logprobs=self._gather(logp, seqs),
            ref_logprobs=self._gather(self.ref_logp, seqs),
        )

    def logprobs(self, sequences: TabularSequences, *, reference: bool = False) -> LogProbs:
        """Log-probs as ``(B, 1)`` token tensors (one token per response)."""
        table = self.ref_logp if reference else self.log_probs_table()
        return self._gather(table, sequences)

    def pair_logprobs(
        self,
        response_0: TabularSequences,
        response_1: TabularSequences,
        *,
        reference: bool = False,
    ) -> tuple[LogProbs, LogProbs]:
        """Both responses' log-probs (one token each: nothing to share)."""
        return self.logprobs(response_0, reference=reference), self.logprobs(
            response_1, reference=reference
        )

    def add_critic(self, head: str) -> None:
        """Make critic ``head`` available. The tabular backend holds one value per prompt for
        ``reward`` and ``cost`` from the start (they train only when a loss reads them)."""
        if head not in self.value_heads:
            raise ValueError(f"the tabular backend has critics {sorted(self.value_heads)}")

    def values(self, sequences: TabularSequences, head: str) -> Tensor:
        """``(B, 1)`` value of the prompt state under the named critic."""
        return self.value_heads[head][sequences.prompt].unsqueeze(-1)

    def step(self, closure: Callable[..., Tensor], weight: Tensor | None = None) -> float:
        """One optimizer step on the loss the closure returns (every row at once)."""
        self.optimizer.zero_grad(set_to_none=True)
        loss = closure() if weight is None else closure(None)
        check_finite(loss.detach(), "the loss", self.steps + 1)
        loss.backward()
        self.optimizer.step()
        self.steps += 1
        check_finite(self.logits.detach(), "the policy's logits", self.steps)
        return float(loss.detach())

    def fork(self) -> TabularPolicy:
        """A fresh policy at the current reference, same mode and optimizer settings."""
        other = TabularPolicy.__new__(TabularPolicy)
        other.__dict__.update(self.__dict__)
        other.logits = torch.nn.Parameter(self.ref_logp.clone())
        other.value_heads = {
            k: torch.nn.Parameter(torch.zeros_like(v)) for k, v in self.value_heads.items()
        }
        other.generator = torch.Generator().manual_seed(int(self.generator.initial_seed()) + 1)
        other.optimizer = other._make_optimizer()
        return other

    def set_reference_to_policy(self) -> None:
        """Freeze π_θ as the new reference; the logits keep training from there."""
        self.ref_logp = self.log_probs_table().detach().clone()
        self.optimizer = self._make_optimizer()

    def state_dict(self) -> dict[str, Any]:
        return {
            "logits": self.logits.detach().clone(),
            "ref_logp": self.ref_logp.clone(),
            "values": {k: v.detach().clone() for k, v in self.value_heads.items()},
            # Deep copy: torch's load_state_dict may keep these very tensors, and two backends
            # sharing Adam moments would corrupt each other.
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            self.logits.copy_(state["logits"])
            for k, v in state["values"].items():
                self.value_heads[k].copy_(v)
        self.ref_logp = state["ref_logp"].clone()
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])

    # ---- testbed helpers --------------------------------------------------------------------

    def log_probs_table(self) -> Tensor:
        """``(K, N)`` log π_θ (differentiable)."""
        return torch.log_softmax(self.logits, dim=-1)

    def policy(self) -> np.ndarray:
        """``(K, N)`` π_θ as numpy."""
        return self.log_probs_table().detach().exp().numpy()

    @staticmethod
    def _gather(table: Tensor, seqs: TabularSequences) -> LogProbs:
        token = table[seqs.prompt, seqs.response].unsqueeze(-1)
        return LogProbs(token=token, mask=torch.ones_like(token))


class TabularScorer:
    """Oracle (or fitted) reward and cost tables as a :class:`~constrained_align.types.Scorer`."""

    def __init__(self, reward: Any, cost: Any, constraints: dict[str, Any] | None = None) -> None:
        self.reward_table = as_table(reward)
        self.cost_table = as_table(cost)
        self.constraint_tables = {"cost": self.cost_table}
        self.constraint_tables.update({k: as_table(v) for k, v in (constraints or {}).items()})

    def reward(self, sequences: TabularSequences) -> Tensor:
        return self.reward_table[sequences.prompt, sequences.response]

    def cost(self, sequences: TabularSequences) -> Tensor:
        return self.cost_table[sequences.prompt, sequences.response]

    def constraint(self, name: str, sequences: TabularSequences) -> Tensor:
        return self.constraint_tables[name][sequences.prompt, sequences.response]
