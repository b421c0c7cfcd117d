"""The runner: builds a language-model run from its config, calls the algorithm's ``train``,
writes the run folder (metrics, checkpoints, final weights, summary) and owns resume.

- :mod:`.train` — ``train_lm``: the whole ``constrained-align train`` pipeline;
- :mod:`.build` — data, score models, policy backend and task from a run config;
- :mod:`.log` — ``metrics.jsonl``, the KL estimate per record, the progress bar;
- :mod:`.replay` — the backend the algorithm sees: sample cache, step counting, resume replay;
- :mod:`.checkpoint` — checkpoint files.
"""
