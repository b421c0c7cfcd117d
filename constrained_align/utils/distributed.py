"""Every cross-process reduction of the training loops, in one place, injected into them.

The online loop is data parallel: each process holds the whole model, rolls out its own shard of
the step's prompts, and the processes agree through four operations only:

- :meth:`Reductions.shard` — which of the step's prompts this process rolls out;
- :meth:`Reductions.gather` — every process's rows (costs for the multiplier, rewards and KL
  for the logs), in rank order, so λ is updated from the whole batch and is the same everywhere;
- :meth:`Reductions.average_gradients` — after ``backward``, the mean gradient over processes
  (one flat all-reduce of the trainable tensors: LoRA adapters and critic heads are small),
  before clipping, so every process takes the same optimizer step;
- :meth:`Reductions.check_in_sync` — a guard that the processes did not drift apart.

:class:`Reductions` itself is the single-process case (identities); the loops are written
against it and never import ``torch.distributed``. :func:`from_environment` returns the
process-group version when the run was started by ``accelerate launch`` (or ``torchrun``):
on CPU-only machines use ``accelerate launch --multi_gpu --num_processes N``, which starts N
processes over gloo (accelerate's ``--cpu`` flag starts one process unless given an MPI
hostfile). Sharded-parameter engines (FSDP, DeepSpeed ZeRO) are not used by our own loop: every
process keeps a full replica; the TRL plug-ins run under whatever engine TRL is given.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import TypeVar

import torch
from torch import Tensor

T = TypeVar("T")


class Reductions:
    """One process: every reduction is the identity."""

    rank = 0
    world_size = 1

    @property
    def is_main(self) -> bool:
        """True on the process that writes files and draws the progress bar."""
        return self.rank == 0

    def shard(self, items: Sequence[T]) -> list[T]:
        """This process's contiguous block of ``items``; blocks differ in size by at most one
        when the world size does not divide ``len(items)``."""
        base, extra = divmod(len(items), self.world_size)
        start = self.rank * base + min(self.rank, extra)
        return list(items[start : start + base + (self.rank < extra)])

    def gather(self, tensor: Tensor) -> Tensor:
        """Every process's ``tensor`` concatenated along dim 0 in rank order (sizes may differ)."""
        return tensor

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """Each value averaged over processes (every process must pass the same keys)."""
        return dict(values)

    def average_gradients(self, params: Iterable[torch.nn.Parameter]) -> None:
        """Replace each ``.grad`` by its mean over processes."""

    def check_in_sync(self, what: str, tensors: Iterable[Tensor]) -> None:
        """Raise if ``tensors`` differ between processes (``what`` names them in the error)."""

    def barrier(self) -> None:
        """Wait until every process gets here."""


class ProcessGroupReductions(Reductions):
    """Reductions over the default ``torch.distributed`` process group."""

    def __init__(self) -> None:
        import torch.distributed as dist

        self._dist = dist
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()

    def _device(self) -> torch.device:
        if self._dist.get_backend() == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def gather(self, tensor: Tensor) -> Tensor:
        device = self._device()
        local = tensor.detach().to(device)
        sizes = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(self.world_size)]
        self._dist.all_gather(sizes, torch.tensor([local.shape[0]], device=device))
        longest = int(max(int(s) for s in sizes))
        padded = local.new_zeros((longest, *local.shape[1:]))
        padded[: local.shape[0]] = local
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        self._dist.all_gather(parts, padded)
        out = torch.cat([p[: int(s)] for p, s in zip(parts, sizes)])
        return out.to(tensor.device)

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        keys = sorted(values)
        flat = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
        flat = flat.to(self._device())
        self._dist.all_reduce(flat)
        return {k: float(v) / self.world_size for k, v in zip(keys, flat.cpu())}

    def average_gradients(self, params: Iterable[torch.nn.Parameter]) -> None:
        params = list(params)
        has_grad = torch.tensor([p.grad is not None for p in params], dtype=torch.int32)
        fewest = has_grad.to(self._device(), copy=True)
        self._dist.all_reduce(fewest, op=self._dist.ReduceOp.MIN)
        if not torch.equal(fewest.cpu(), has_grad):
            raise RuntimeError(
                "processes computed gradients for different parameters; every process must run "
                "the same losses on the same trainable tensors"
            )
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads]).to(self._device())
        self._dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    def check_in_sync(self, what: str, tensors: Iterable[Tensor]) -> None:
        flat = torch.cat([t.detach().double().reshape(-1).cpu() for t in tensors])
        lowest, highest = flat.to(self._device(), copy=True), flat.to(self._device(), copy=True)
        self._dist.all_reduce(lowest, op=self._dist.ReduceOp.MIN)
        self._dist.all_reduce(highest, op=self._dist.ReduceOp.MAX)
        gap = float((highest - lowest).abs().max()) if flat.numel() else 0.0
        if gap > 0:
            raise RuntimeError(
                f"{what} differ between the {self.world_size} processes (largest gap {gap:.3g}); "
                "the data-parallel replicas drifted apart"
            )

    def barrier(self) -> None:
        self._dist.barrier()


def from_environment() -> Reductions:
    """The reductions of this process: a process group when launched with ``WORLD_SIZE`` > 1
    (``accelerate launch`` / ``torchrun``; the group is set up here if nobody did), else the
    single-process identities."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Reductions()
    import torch.distributed as dist

    if not dist.is_initialized():
        from accelerate import PartialState

        PartialState()  # sets up the process group (and the GPU of this rank, if any)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return ProcessGroupReductions()


def local_device(requested: str) -> str:
    """The device of this process: ``auto`` is this rank's GPU (``LOCAL_RANK``) when CUDA is
    available, else the CPU."""
    if requested != "auto":
        return requested
    if not torch.cuda.is_available():
        return "cpu"
    return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
