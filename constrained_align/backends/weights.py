"""Where a causal-LM policy's trainable weights and its frozen reference live.

Two layouts behind one small interface:

- :class:`LoraWeights`: a peft LoRA adapter over the base model. The reference is the same
  model with the adapters disabled, so there is one copy of the base weights in memory. Forks
  (PeCAN's two pre-aligned models) are further adapters on the same base. Swapping the reference
  (SACPO stage 2) folds the adapter's ΔW into the base weights and zeroes the adapter's B
  matrix, so the policy equals the new reference and training continues from there.
- :class:`FullWeights`: every weight trains; the reference is a frozen copy.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn


def _frozen(model: nn.Module) -> nn.Module:
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


class FullWeights:
    """Full fine-tuning: ``model`` trains, ``reference`` is a frozen deep copy."""

    lora = False

    def __init__(self, model: nn.Module, reference: nn.Module | None = None) -> None:
        self.model = model.eval()
        self.reference = _frozen(reference if reference is not None else copy.deepcopy(model))

    @contextmanager
    def policy_model(self) -> Iterator[nn.Module]:
        yield self.model

    @contextmanager
    def reference_model(self) -> Iterator[nn.Module]:
        yield self.reference

    def trainable(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def fork(self) -> FullWeights:
        """A new trainable copy of the reference, sharing the reference model."""
        child = copy.deepcopy(self.reference)
        for p in child.parameters():
            p.requires_grad_(True)
        return FullWeights(child, self.reference)

    def swap_reference(self) -> None:
        self.reference.load_state_dict(self.model.state_dict())

    def state_dict(self) -> dict[str, Any]:
        return {
            "policy": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
            "reference": {k: v.detach().clone() for k, v in self.reference.state_dict().items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["policy"])
        self.reference.load_state_dict(state["reference"])

    def save(self, folder: str) -> None:
        self.model.save_pretrained(folder, safe_serialization=True)


class LoraWeights:
    """A LoRA adapter ``adapter`` of a peft model; the reference is the adapter-free base."""

    lora = True

    def __init__(self, model: nn.Module, adapter: str = "default") -> None:
        self.model = model.eval()
        self.adapter = adapter
        self.forks = 0
        self.swapped = False  # the base weights hold a folded adapter (checkpoints keep them)

    @contextmanager
    def policy_model(self) -> Iterator[nn.Module]:
        # set_adapter also makes this adapter (and only it) trainable; adding a fork's adapter
        # may have changed that.
        self.model.set_adapter(self.adapter)
        yield self.model

    @contextmanager
    def reference_model(self) -> Iterator[nn.Module]:
        with self.model.disable_adapter():
            yield self.model

    def _lora_layers(self) -> list[nn.Module]:
        return [
            m
            for m in self.model.modules()
            if hasattr(m, "lora_B") and self.adapter in getattr(m, "lora_B", {})
        ]

    def trainable(self) -> list[nn.Parameter]:
        params = []
        for layer in self._lora_layers():
            for part in (layer.lora_A[self.adapter], layer.lora_B[self.adapter]):
                for p in part.parameters():
                    p.requires_grad_(True)
                    params.append(p)
        return params

    def fork(self) -> LoraWeights:
        """A fresh adapter (B = 0, so it starts at the reference) on the same base model."""
        self.forks += 1
        name = f"{self.adapter}_fork{self.forks}"
        self.model.add_adapter(name, self.model.peft_config[self.adapter])
        return LoraWeights(self.model, name)

    @torch.no_grad()
    def swap_reference(self) -> None:
        if len(self.model.peft_config) > 1:
            raise RuntimeError("cannot swap the reference of a base model shared by forks")
        for layer in self._lora_layers():
            layer.base_layer.weight += layer.get_delta_weight(self.adapter)
            layer.lora_B[self.adapter].weight.zero_()
        self.swapped = True

    def state_dict(self) -> dict[str, Any]:
        adapter = {}
        base = {}
        for name, layer in self.model.named_modules():
            if hasattr(layer, "lora_B") and self.adapter in layer.lora_B:
                adapter[f"{name}.A"] = layer.lora_A[self.adapter].weight.detach().clone()
                adapter[f"{name}.B"] = layer.lora_B[self.adapter].weight.detach().clone()
                if self.swapped:
                    base[name] = layer.base_layer.weight.detach().clone()
        return {"adapter": adapter, "base": base}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, layer in self.model.named_modules():
            if hasattr(layer, "lora_B") and self.adapter in layer.lora_B:
                layer.lora_A[self.adapter].weight.copy_(state["adapter"][f"{name}.A"])
                layer.lora_B[self.adapter].weight.copy_(state["adapter"][f"{name}.B"])
                if name in state["base"]:
                    layer.base_layer.weight.copy_(state["base"][name])
        self.swapped = self.swapped or bool(state["base"])

    def save(self, folder: str) -> None:
        self.model.save_pretrained(folder, selected_adapters=[self.adapter])
