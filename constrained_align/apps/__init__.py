"""Applications built on the runner and the evaluation: ``compare`` (several keys, one model,
one cost limit, one report), ``compare --testbed`` (the same report on the closed-form bandit),
and the evaluation of one trained run (``eval --model``), with the comparison presets.
"""
