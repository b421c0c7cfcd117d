"""``python -m constrained_align`` is the ``constrained-align`` command (what ``accelerate launch
-m constrained_align train ...`` starts in every process)."""

from constrained_align.cli import entry

entry()
