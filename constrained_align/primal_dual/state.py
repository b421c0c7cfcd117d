"""The one file format of a multiplier's state: ``primal_dual.json``.

Every writer writes it and every reader reads it: the runner's checkpoints and ``final/``
folder, ``ConstrainedDPOTrainer`` and ``LagrangianCallback`` checkpoints. So the λ a ``train``
run ends with can start a TRL run (``load_dual_state(trainer.primal_dual, "run/final")``), and
a TRL checkpoint's λ reads like any other. The file is strict JSON, written atomically::

    {"format": 1, "global_step": <optimizer steps, or records for a train run>,
     "state": PrimalDual.state_dict()}
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from constrained_align.primal_dual.primal_dual import PrimalDual
from constrained_align.utils import write_json

#: File name of the multiplier state inside a checkpoint or final folder.
DUAL_STATE_NAME = "primal_dual.json"
FORMAT = 1


def save_dual_state(primal_dual: PrimalDual, folder: str | os.PathLike[str], step: int) -> Path:
    """Write ``primal_dual.state_dict()`` to ``folder/primal_dual.json`` atomically.

    Args:
        primal_dual: the multiplier state to save.
        folder: the checkpoint or final folder (created if missing).
        step: the global step the state belongs to, recorded for checking on resume.

    Returns:
        The file written.
    """
    path = Path(folder) / DUAL_STATE_NAME
    write_json(path, {"format": FORMAT, "global_step": step, "state": primal_dual.state_dict()})
    return path


def read_dual_state(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed ``folder/primal_dual.json`` (``format``, ``global_step``, ``state``).

    Raises:
        FileNotFoundError: if the folder has no multiplier state (resuming would silently
            restart λ, safe-rlhf issue #138).
        ValueError: on an unknown file format.
    """
    path = Path(folder) / DUAL_STATE_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: the checkpoint has no multiplier state, so resuming would restart "
            "λ from its initial value"
        )
    payload = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{path}: unknown format {found!r}")
    return payload


def load_dual_state(primal_dual: PrimalDual, folder: str | os.PathLike[str]) -> int:
    """Restore ``primal_dual`` from ``folder/primal_dual.json``; returns the saved global step.

    Raises:
        FileNotFoundError: if the folder has no multiplier state.
        ValueError: on an unknown file format, or a state whose constraints or rules differ.
    """
    payload = read_dual_state(folder)
    primal_dual.load_state_dict(payload["state"])
    return int(payload["global_step"])
