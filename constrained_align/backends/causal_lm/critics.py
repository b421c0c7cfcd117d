"""Critics (value functions) of the online keys on a causal-LM policy.

A critic is a trunk plus a linear value head. Under LoRA the trunk is one more adapter on the
base model the policy and the reference already share, so one copy of the base weights serves
actor, reference and both critics; under full fine-tuning it is a trainable copy of the
reference. The head starts at zero, so every critic starts at V = 0 on the reference model's
features. (Safe RLHF initialises its critics from the reward and cost models instead; ours need
no second architecture and work with score models that have their own tokenizer.)

Alignment: V(s_t), the value of the state before response token t, is read from the hidden
state at position t − 1 — the position whose logits give log π(y_t) — so values, log-probs and
the response mask line up token for token.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from constrained_align.backends.causal_lm.weights import FullWeights, LoraWeights


class Critics:
    """The named critics of one policy (``reward`` and ``cost`` for PPO-Lagrangian)."""

    def __init__(self, weights: LoraWeights | FullWeights) -> None:
        self.weights = weights
        self.value_heads: dict[str, nn.Linear] = {}
        self.trunks: dict[str, list[nn.Parameter]] = {}

    @property
    def heads(self) -> list[str]:
        return list(self.value_heads)

    def add(self, head: str) -> list[nn.Parameter]:
        """Make critic ``head`` if needed; returns its trainable parameters (trunk + head)."""
        if head not in self.value_heads:
            self.trunks[head] = self.weights.add_critic(head)
            embeddings = self.weights.model.get_output_embeddings().weight
            linear = nn.Linear(embeddings.shape[1], 1, device=embeddings.device)
            nn.init.zeros_(linear.weight)
            nn.init.zeros_(linear.bias)
            self.value_heads[head] = linear
        return self.trunks[head] + list(self.value_heads[head].parameters())

    def modules(self) -> list[nn.Module]:
        """The critics' own modules: value heads, and full-fine-tuning trunks (LoRA trunks are
        adapters inside the policy's model)."""
        trunks = [] if self.weights.lora else list(self.weights.critics.values())
        return [*self.value_heads.values(), *trunks]

    def readout(self, head: str) -> Callable[[Tensor, Tensor], Tensor]:
        """``readout(states, targets)``: V(s_t) of critic ``head`` from the hidden states that
        precede each response token (the targets are not needed; differentiable)."""
        linear = self.value_heads[head]
        return lambda states, targets: linear(states.to(linear.weight.dtype)).squeeze(-1).float()

    def state_dict(self) -> dict[str, Any]:
        """Value-head tensors by critic (the trunks are in the weights' state)."""
        return {
            head: {k: v.detach().clone() for k, v in linear.state_dict().items()}
            for head, linear in self.value_heads.items()
        }

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        for head, tensors in state.items():
            self.add(head)
            self.value_heads[head].load_state_dict(tensors)
