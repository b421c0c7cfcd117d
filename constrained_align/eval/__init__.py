"""Evaluation of aligned policies: the one policy evaluation used by ``train``, ``compare`` and
``eval --model`` (:mod:`.policy`: reward, cost, harmful ratio, over-refusal and KL on held-out
prompts, and the one KL estimate), the refusal rule (:mod:`.refusal`), and the comparison's
report and plots (:mod:`.report`, :mod:`.plots`)."""
