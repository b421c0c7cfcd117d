"""Checkpoints of a language-model run and resuming from them.

A checkpoint (``checkpoints/epoch-000012/state.pt``) holds, after a logged epoch:

- the state of every policy backend of the run (the policy and any forks: weights or adapter,
  optimizer, sampling generator, optimizer-step count);
- the multiplier (``PrimalDual.state_dict()``), also as ``primal_dual.json`` (the one state-file
  format of :mod:`constrained_align.primal_dual.state`);
- the torch, Python and NumPy RNG states;
- every metrics record logged so far.

A run of several data-parallel processes (``accelerate launch``) keeps one replica of the
weights, optimizer and multiplier (written by the main process once every process has written
its own ``rank-<r>.pt``: its sampling generators and RNG states, which differ by process), and
resumes with the same number of processes.

Resuming runs the algorithm again from its start in *replay* mode (see
:meth:`~constrained_align.backends.causal_lm.CausalLMPolicy.arm_resume`): optimizer steps are
counted, not computed, until each backend reaches its saved step and loads its state; samples
and scores come from the on-disk cache; logged records are restored instead of written. The
algorithm code therefore needs no resume logic of its own, and the multiplier reaches the saved
value by the same updates (checked against the saved state when the replay ends).
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from constrained_align.config import ConfigError
from constrained_align.primal_dual import PrimalDual, save_dual_state
from constrained_align.runner.replay import RunBackend
from constrained_align.utils import atomic_path, load_tensors
from constrained_align.utils.distributed import Reductions

STATE_FILE = "state.pt"


def rng_state() -> dict[str, Any]:
    """The torch, Python and NumPy RNG states as tensors and plain data (so a checkpoint loads
    with ``weights_only=True``)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["name"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))


class Checkpointer:
    """Saves checkpoints every ``every`` logged epochs and keeps the last ``keep``.

    Args:
        folder: the run's ``checkpoints/`` folder.
        root: the policy backend.
        every: logged epochs between checkpoints (0 = never).
        keep: checkpoints kept (older ones are removed after a new one is complete).
        dist: the cross-process reductions (every process calls :meth:`save`).
    """

    def __init__(
        self,
        folder: Path,
        root: RunBackend,
        *,
        every: int,
        keep: int,
        dist: Reductions | None = None,
    ) -> None:
        self.folder = folder
        self.root = root
        self.every = every
        self.keep = max(1, keep)
        self.dist = dist or Reductions()

    def save(self, records: list[dict[str, Any]], primal_dual: PrimalDual | None) -> Path:
        """Write ``epoch-<n>/state.pt`` (and ``primal_dual.json``) atomically."""
        target = self.folder / f"epoch-{len(records):06d}"
        target.mkdir(parents=True, exist_ok=True)
        dist = self.dist
        if dist.world_size > 1:
            mine = {
                "generators": {b.name: b.inner.generator.get_state() for b in self.root.tree()},
                "rng": rng_state(),
            }
            with atomic_path(target / f"rank-{dist.rank:03d}.pt") as tmp:
                torch.save(mine, tmp)
            dist.barrier()
            if not dist.is_main:
                return target
        state = {
            "records": records,
            "backends": {b.name: b.state_dict() for b in self.root.tree()},
            "primal_dual": primal_dual.state_dict() if primal_dual is not None else None,
            "rng": rng_state(),
            "run_tag": self.root.run_tag,
            "world_size": dist.world_size,
        }
        if primal_dual is not None:
            save_dual_state(primal_dual, target, len(records))
        with atomic_path(target / STATE_FILE) as tmp:
            torch.save(state, tmp)
        self._prune()
        return target

    def maybe_save(self, records: list[dict[str, Any]], primal_dual: PrimalDual | None) -> None:
        if self.every > 0 and len(records) % self.every == 0:
            self.save(records, primal_dual)

    def _prune(self) -> None:
        for old in complete_checkpoints(self.folder)[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)


def complete_checkpoints(folder: Path) -> list[Path]:
    """Checkpoint folders whose state file was written, oldest first."""
    return sorted(p for p in folder.glob("epoch-*") if (p / STATE_FILE).is_file())


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint folder, or None."""
    done = complete_checkpoints(folder)
    return done[-1] if done else None


def load_checkpoint(path: Path, dist: Reductions | None = None) -> dict[str, Any]:
    """The saved state of a checkpoint folder, as this process saved it."""
    dist = dist or Reductions()
    state = _read(path / STATE_FILE)
    saved = int(state.get("world_size", 1))
    if saved != dist.world_size:
        raise ConfigError(
            f"--resume: {path} was saved by {saved} process(es); resume it with the same number "
            f"(this launch has {dist.world_size})"
        )
    if dist.world_size > 1:
        mine = _read(path / f"rank-{dist.rank:03d}.pt")
        for name, generator in mine["generators"].items():
            state["backends"][name]["generator"] = generator
        state["rng"] = mine["rng"]
    return state


def _read(file: Path) -> dict[str, Any]:
    """A checkpoint file, read without running anything in it (tensors and plain data only)."""
    try:
        state = load_tensors(file, what="checkpoint")
    except (OSError, RuntimeError, EOFError) as err:
        raise ConfigError(f"--resume: {file} cannot be read ({err}); it is damaged") from err
    if not isinstance(state, dict):
        raise ConfigError(f"--resume: {file} is not a checkpoint of this library")
    return state
