"""Policy backends: what an algorithm asks a policy to do (sample, log-probs, critic values,
optimizer steps, state), implemented twice — :mod:`.tabular` for the closed-form testbed and
:mod:`.causal_lm` for transformers causal LMs. The algorithms see only the
:class:`~constrained_align.types.PolicyBackend` interface.
"""
