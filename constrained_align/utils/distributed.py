"""Every cross-process reduction the algorithms and the run need, in one place, injected.

Under ``accelerate launch`` every process runs the same algorithm on the same data; the
gradient all-reduce is the engine's (``backends.causal_lm.engine``: accelerate's DDP), and the
processes agree on everything else through these operations only:

- :meth:`Reductions.shard` and :func:`block` — which contiguous block of a batch (pairs,
  prompts, samples) this process works on;
- :meth:`Reductions.gather` and :meth:`Reductions.gather_objects` — every process's rows
  (sampled responses, costs for the multiplier, rewards and KL for the logs) in rank order,
  so λ is updated from the whole batch and is the same on every process;
- :meth:`Reductions.mean` — metrics averaged over processes;
- :meth:`Reductions.check_in_sync` — a guard that the processes did not drift apart.

:class:`Reductions` itself is the single-process case (identities); the loops are written
against it and never import ``torch.distributed``. :func:`from_environment` returns the
process-group version when the run was started by ``accelerate launch`` (or ``torchrun``); on
machines without CUDA, ``accelerate launch --multi_gpu --num_processes N`` starts N processes
over gloo.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

import torch
from torch import Tensor

T = TypeVar("T")


def block(count: int, world_size: int, rank: int) -> range:
    """Process ``rank``'s contiguous block of ``count`` items; blocks go in rank order and
    differ in size by at most one when ``world_size`` does not divide ``count``."""
    base, extra = divmod(count, world_size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (rank < extra))


class Reductions:
    """One process: every reduction is the identity."""

    rank = 0
    world_size = 1

    @property
    def is_main(self) -> bool:
        """True on the process that writes files and draws the progress bar."""
        return self.rank == 0

    def shard(self, items: Sequence[T]) -> list[T]:
        """This process's contiguous block of ``items`` (:func:`block`)."""
        mine = block(len(items), self.world_size, self.rank)
        return list(items[mine.start : mine.stop])

    def gather(self, tensor: Tensor) -> Tensor:
        """Every process's ``tensor`` concatenated along dim 0 in rank order (sizes may differ)."""
        return tensor

    def gather_objects(self, value: Any) -> list[Any]:
        """Every process's picklable ``value``, in rank order."""
        return [value]

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """Each value averaged over processes (every process must pass the same keys)."""
        return dict(values)

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

    def gather_objects(self, value: Any) -> list[Any]:
        out: list[Any] = [None] * self.world_size
        self._dist.all_gather_object(out, value)
        return out

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        keys = sorted(values)
        flat = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
        flat = flat.to(self._device())
        self._dist.all_reduce(flat)
        return {k: float(v) / self.world_size for k, v in zip(keys, flat.cpu())}

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


def use_cpu_processes() -> bool:
    """Whether this is a multi-process launch without CUDA, which accelerate must be told is
    a multi-CPU one (gloo); when it is, ``ACCELERATE_USE_CPU`` is set for accelerate's state.

    ``accelerate launch --multi_gpu --num_processes N`` on a machine without GPUs starts N
    processes but leaves each one thinking it is alone unless accelerate's state is made
    with ``cpu=True``.
    """
    cpu = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
    if cpu:
        os.environ["ACCELERATE_USE_CPU"] = "true"
    return cpu


def from_environment() -> Reductions:
    """The reductions of this process: a process group when launched with ``WORLD_SIZE`` > 1
    (``accelerate launch`` / ``torchrun``; the group is set up here if nobody did), else the
    single-process identities."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Reductions()
    import torch.distributed as dist

    if not dist.is_initialized():
        from accelerate import PartialState

        PartialState(
            cpu=use_cpu_processes()
        )  # sets up the process group (and the GPU of this rank, if any)
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
