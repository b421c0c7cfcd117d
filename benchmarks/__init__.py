"""Benchmarks of constrained_align against its peers (stock TRL, plain transformers loops).

``python benchmarks/run.py [--quick] [--only NAME ...] [--json FILE] [--repeats N]`` measures
each case of ours against its peer in one run on one machine, with the share of the machine's
fp32 GEMM bound that each reaches. :mod:`.common` holds the timing, the GEMM rate, the FLOP
formulas, the machine description and the model/data setup; one module per group of cases:
:mod:`.training` (``dpo_step``, ``reference_pass``), :mod:`.generation`
(``generation_b16``, ``generation_b64``), :mod:`.ppo` (``ppo_step``), :mod:`.memory`
(``logprob_memory``) and :mod:`.scoring` (``scoring``).
"""
