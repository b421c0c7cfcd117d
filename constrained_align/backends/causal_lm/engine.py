"""The training engine of a causal-LM policy: accelerate's ``Accelerator``.

A policy's optimizer step (:meth:`CausalLMPolicy.step`) asks the engine for four things, and
the engine is whatever the launch configured (``accelerate launch`` and its config file):

- :meth:`Engine.wrap`: the trainable module prepared by accelerate, DistributedDataParallel
  under a multi-process launch, so the gradient all-reduce is the engine's. It is prepared
  again when the set of trainable tensors changes (critics added, a PeCAN fork trained);
- :meth:`Engine.micro_steps`: accelerate's gradient accumulation over the micro-batches of one
  step (``no_sync`` on all but the last, the loss divided by their number in ``backward``);
- :meth:`Engine.autocast`: mixed precision (``no``, ``bf16``, ``fp16``, with fp16's loss
  scaling done by accelerate's scaler in ``backward``, ``clip_grad_norm_`` and the step);
- :meth:`Engine.clip` and :meth:`Engine.step`: the gradient norm clipped, the optimizer
  stepped.

Why the whole loss goes through one DDP ``forward``: the policy reads hidden states from the
decoder directly (only the response positions reach the LM head), and a PPO step runs the
actor and both critics, which are adapters on one shared base. So the wrapped module's forward
takes the loss closure itself; DDP sees one forward per micro-batch, finds from its graph the
adapters that took part (``find_unused_parameters``), and all-reduces their gradients.

Sharded engines (FSDP, DeepSpeed ZeRO) are refused by our own loop: it switches adapters on
one shared base (actor, reference, critics, forks) and adds critics after the model is
prepared, while those engines shard the base in place and fix the parameter set when they
prepare. The TRL plug-ins run under them (docs/SEVERAL_GPUS.md).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import Tensor, nn

from constrained_align.config import ConfigError
from constrained_align.utils.distributed import use_cpu_processes

#: The distributed types of accelerate our own loop runs under.
SUPPORTED = ("NO", "MULTI_CPU", "MULTI_GPU")
#: What ``accelerate launch`` sets for a sharded engine (on CPUs accelerate itself would fall
#: back to plain data parallelism without a word).
SHARDED_FLAGS = {"ACCELERATE_USE_FSDP": "FSDP", "ACCELERATE_USE_DEEPSPEED": "DEEPSPEED"}


def check_engine(kind: str) -> None:
    """Refuse a sharded engine (asked for by the launch, or prepared by accelerate)."""
    from accelerate.utils import parse_flag_from_env

    asked = [name for flag, name in SHARDED_FLAGS.items() if parse_flag_from_env(flag)]
    if asked or kind not in SUPPORTED:
        raise ConfigError(
            f"accelerate's {(asked or [kind])[0]} engine shards the base model in place, and "
            "our own loop switches adapters on one shared base (actor, reference, critics) and "
            "adds critics after preparing it: launch with a DDP config "
            "(examples/accelerate/ddp.yaml), or train with the TRL plug-ins "
            "(ConstrainedDPOTrainer, LagrangianCallback; docs/SEVERAL_GPUS.md)"
        )


class _LossModule(nn.Module):
    """What the engine prepares: the trainable modules, with a forward that runs a closure."""

    def __init__(self, modules: list[nn.Module]) -> None:
        super().__init__()
        self.parts = nn.ModuleList(modules)

    def forward(self, closure: Callable[[], Tensor]) -> Tensor:
        return closure()


def launch_precision() -> str:
    """The mixed precision ``accelerate launch`` was given (``no`` without a launcher)."""
    return os.environ.get("ACCELERATE_MIXED_PRECISION", "no").lower()


def _accelerator(mixed_precision: str, accumulation: int) -> Any:
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedDataParallelKwargs

    cpu = use_cpu_processes()
    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") not in (None, mixed_precision):
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ConfigError(
                f"engine.mixed_precision: {mixed_precision} differs from the launch's "
                f"{state['_mixed_precision']} (accelerate launch --mixed_precision)"
            )
        AcceleratorState._reset_state(reset_partial_state=False)  # one process, a new run
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True, broadcast_buffers=False)
    try:
        return Accelerator(
            cpu=cpu,
            mixed_precision=mixed_precision,
            gradient_accumulation_steps=accumulation,
            kwargs_handlers=[ddp],
        )
    except ValueError as err:
        raise ConfigError(f"engine: {err}") from err


class Engine:
    """accelerate's engine for the optimizer steps of one run (shared by its forks).

    Args:
        mixed_precision: ``no`` (fp32), ``bf16`` or ``fp16``; None takes the launch's.
        gradient_accumulation_steps: micro-batches per optimizer step on each process.
    """

    def __init__(
        self, *, mixed_precision: str | None = None, gradient_accumulation_steps: int = 1
    ) -> None:
        self.accumulation = gradient_accumulation_steps
        self.mixed_precision = mixed_precision or launch_precision()
        check_engine("NO")  # before accelerate prepares anything
        self.accelerator = _accelerator(self.mixed_precision, gradient_accumulation_steps)
        check_engine(self.accelerator.distributed_type.name)
        self.world_size = self.accelerator.num_processes
        self._wrapped: tuple[frozenset[int], nn.Module] | None = None
        self._optimizers: dict[int, Any] = {}

    def describe(self) -> dict[str, Any]:
        """What ran the steps (for a run's summary): engine, processes, precision, micro-batches."""
        return {
            "distributed_type": self.accelerator.distributed_type.name,
            "processes": self.world_size,
            "mixed_precision": self.mixed_precision,
            "gradient_accumulation_steps": self.accumulation,
        }

    def wrap(self, modules: list[nn.Module], params: list[nn.Parameter]) -> nn.Module:
        """The prepared module over ``modules`` whose trainable tensors are ``params``; made
        again only when ``params`` changed since the last call."""
        key = frozenset(id(p) for p in params)
        if self._wrapped is None or self._wrapped[0] != key:
            for module in modules:
                for p in module.parameters():
                    p.requires_grad_(id(p) in key)
            prepared = self.accelerator.prepare_model(_LossModule(modules), device_placement=False)
            self._wrapped = (key, prepared)
            for p in params:
                p.requires_grad_(True)
        return self._wrapped[1]

    def optimizer(self, optimizer: torch.optim.Optimizer) -> Any:
        """``optimizer`` prepared by accelerate (skips the step while accumulating; fp16's
        scaler), once per optimizer object."""
        if id(optimizer) not in self._optimizers:
            self._optimizers = {
                id(optimizer): self.accelerator.prepare_optimizer(optimizer, device_placement=False)
            }
        return self._optimizers[id(optimizer)]

    def micro_steps(self, module: nn.Module) -> Iterator[AbstractContextManager[None]]:
        """The ``gradient_accumulation_steps`` contexts of one optimizer step, in order; the
        gradients are synchronised across processes in the last one only."""
        self.accelerator.gradient_accumulation_steps = self.accumulation
        for _ in range(self.accumulation):
            yield self.accelerator.accumulate(module)

    def autocast(self) -> AbstractContextManager[None]:
        """The forward's mixed-precision context (a no-op under ``no``)."""
        return self.accelerator.autocast()

    def backward(self, loss: Tensor) -> None:
        """``loss`` / accumulation steps, backpropagated (scaled under fp16)."""
        self.accelerator.backward(loss)

    def clip(self, params: list[nn.Parameter], clip: float | None) -> Tensor:
        """Clip the gradient norm of ``params`` to ``clip`` (None: measure it only; fp16's
        gradients are unscaled first); returns the norm before clipping."""
        norm = self.accelerator.clip_grad_norm_(params, float("inf") if clip is None else clip)
        return torch.as_tensor(norm)

    def step(self, optimizer: Any) -> None:
        """The optimizer step (skipped by fp16's scaler on inf gradients), then zero grads."""
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    @property
    def loss_scaled(self) -> bool:
        """Whether fp16's loss scaler runs (it skips steps with inf gradients by design)."""
        return self.accelerator.scaler is not None
