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
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from constrained_align.types import TrainingError

#: No trained weight of a working language model comes near this magnitude; past it the
#: weights diverged (a normalisation layer can hide that from the loss for a while).
WEIGHT_LIMIT = 1e8


def check_weights(params: list[torch.nn.Parameter], step: int) -> None:
    """Raise :class:`TrainingError` when a trained weight is not finite or above
    :data:`WEIGHT_LIMIT` in magnitude."""
    for p in params:
        top = float(p.detach().abs().max()) if p.numel() else 0.0
        if not top <= WEIGHT_LIMIT:  # also catches NaN
            raise TrainingError(
                f"step {step}: a trained weight reached {top:.3g} (the limit is "
                f"{WEIGHT_LIMIT:g}): the weights diverged; the run stopped"
            )


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
        self.critics: dict[str, nn.Module] = {}

    def add_critic(self, name: str) -> list[nn.Parameter]:
        """A critic trunk: a trainable copy of the reference (full fine-tuning has no adapters)."""
        trunk = copy.deepcopy(self.reference).eval()
        for p in trunk.parameters():
            p.requires_grad_(True)
        self.critics[name] = trunk
        return list(trunk.parameters())

    @contextmanager
    def critic_model(self, name: str) -> Iterator[nn.Module]:
        yield self.critics[name]

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
        def snap(m: nn.Module) -> dict[str, Any]:
            return {k: v.detach().clone() for k, v in m.state_dict().items()}

        return {
            "policy": snap(self.model),
            "reference": snap(self.reference),
            "critics": {name: snap(trunk) for name, trunk in self.critics.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["policy"])
        self.reference.load_state_dict(state["reference"])
        for name, trunk in state.get("critics", {}).items():
            if name not in self.critics:
                self.add_critic(name)
            self.critics[name].load_state_dict(trunk)

    def save(self, folder: str) -> None:
        self.model.save_pretrained(folder, safe_serialization=True)


FOLDED_FILE = "folded_adapters.pt"


class LoraWeights:
    """A LoRA adapter ``adapter`` of a peft model; the reference is the adapter-free base."""

    lora = True

    def __init__(self, model: nn.Module, adapter: str = "default") -> None:
        self.model = model.eval()
        self.adapter = adapter
        self.forks = 0
        self.swapped = False  # the base weights hold a folded adapter (checkpoints keep them)
        self.folded: list[dict[str, Any]] = []  # the adapters folded into the base, in order
        self.critics: list[str] = []  # adapter names of the critic trunks

    def _activate(self, name: str) -> None:
        # set_adapter makes only ``name`` trainable; a PPO closure runs the policy and then the
        # critics, and the policy's graph needs its adapter to keep requires_grad.
        self.model.set_adapter(name)
        for adapter in (self.adapter, *self.critics):
            for p in self._adapter_params(adapter):
                p.requires_grad_(True)

    def add_critic(self, name: str) -> list[nn.Parameter]:
        """A critic trunk: a fresh adapter (B = 0) on the shared base, so the critic starts
        from the reference model's features. Its A matrices are drawn from a generator seeded
        by the adapter's name, so every data-parallel process (and every rerun) makes the same
        critic whatever the global RNG went through before."""
        adapter = f"{self.adapter}_critic_{name}"
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(zlib.crc32(adapter.encode()))
            self.model.add_adapter(adapter, self.model.peft_config[self.adapter])
        self.critics.append(adapter)
        return self._adapter_params(adapter)

    @contextmanager
    def critic_model(self, name: str) -> Iterator[nn.Module]:
        self._activate(f"{self.adapter}_critic_{name}")
        yield self.model

    def _adapter_params(self, adapter: str) -> list[nn.Parameter]:
        params = []
        for layer in self.model.modules():
            if hasattr(layer, "lora_B") and adapter in layer.lora_B:
                params.extend(layer.lora_A[adapter].parameters())
                params.extend(layer.lora_B[adapter].parameters())
        return params

    @contextmanager
    def policy_model(self) -> Iterator[nn.Module]:
        self._activate(self.adapter)
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
        params = self._adapter_params(self.adapter)
        for p in params:
            p.requires_grad_(True)
        return params

    def fork(self) -> LoraWeights:
        """A fresh adapter (B = 0, so it starts at the reference) on the same base model."""
        self.forks += 1
        name = f"{self.adapter}_fork{self.forks}"
        self.model.add_adapter(name, self.model.peft_config[self.adapter])
        return LoraWeights(self.model, name)

    @torch.no_grad()
    def swap_reference(self) -> None:
        if len(self.model.peft_config) > 1 + len(self.critics):
            raise RuntimeError("cannot swap the reference of a base model shared by forks")
        if self.critics:
            raise RuntimeError("cannot swap the reference under critics that share the base")
        self.folded.append(self._adapter_state(self.adapter))
        self._fold()

    @torch.no_grad()
    def _fold(self) -> None:
        for layer in self._lora_layers():
            layer.base_layer.weight += layer.get_delta_weight(self.adapter)
            layer.lora_B[self.adapter].weight.zero_()
        self.swapped = True

    def _adapter_state(self, adapter: str) -> dict[str, Any]:
        out = {}
        for name, layer in self.model.named_modules():
            if hasattr(layer, "lora_B") and adapter in layer.lora_B:
                out[f"{name}.A"] = layer.lora_A[adapter].weight.detach().clone()
                out[f"{name}.B"] = layer.lora_B[adapter].weight.detach().clone()
        return out

    @torch.no_grad()
    def _load_adapter(self, adapter: str, state: dict[str, Any]) -> None:
        for name, layer in self.model.named_modules():
            if hasattr(layer, "lora_B") and adapter in layer.lora_B:
                layer.lora_A[adapter].weight.copy_(state[f"{name}.A"])
                layer.lora_B[adapter].weight.copy_(state[f"{name}.B"])

    def state_dict(self) -> dict[str, Any]:
        base = {}
        if self.swapped:
            for name, layer in self.model.named_modules():
                if hasattr(layer, "lora_B") and self.adapter in layer.lora_B:
                    base[name] = layer.base_layer.weight.detach().clone()
        return {
            "adapter": self._adapter_state(self.adapter),
            "base": base,
            "folded": list(self.folded),
            "critics": {a: self._adapter_state(a) for a in self.critics},
        }

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._load_adapter(self.adapter, state["adapter"])
        for name, layer in self.model.named_modules():
            if hasattr(layer, "lora_B") and name in state["base"]:
                layer.base_layer.weight.copy_(state["base"][name])
        self.swapped = self.swapped or bool(state["base"])
        self.folded = list(state.get("folded", self.folded))
        prefix = f"{self.adapter}_critic_"
        for adapter, tensors in state.get("critics", {}).items():
            if adapter not in self.critics:
                self.add_critic(adapter[len(prefix) :])
            self._load_adapter(adapter, tensors)

    def save(self, folder: str) -> None:
        """The adapter in peft format, and after reference swaps (SACPO) the adapters folded
        into the base, in order (``folded_adapters.pt``), which :meth:`load_folded` replays."""
        self.model.save_pretrained(folder, selected_adapters=[self.adapter])
        if self.folded:
            torch.save(self.folded, f"{folder}/{FOLDED_FILE}")

    @torch.no_grad()
    def load_folded(self, folded: list[dict[str, Any]]) -> None:
        """Fold saved adapters into the base weights again, by the same operations that
        folded them in training (so the base weights come out bit-identical)."""
        kept = self._adapter_state(self.adapter)
        for state in folded:
            self._load_adapter(self.adapter, state)
            self._fold()
        self._load_adapter(self.adapter, kept)
        self.folded = list(folded)
