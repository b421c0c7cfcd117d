"""Settings of ``constrained-align compare`` and ``constrained-align eval``.

A comparison trains several registry keys on the same policy, score models, prompts and cost
limit, evaluates every resulting model (and the reference) on the same held-out prompts, and
writes one report. Its preset (``compare:default``, ``compare:tiny`` or a YAML file) names the
algorithms, the shared run settings and each key's budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from constrained_align.config.checks import AT_LEAST_1, NON_NEGATIVE, OPEN_UNIT
from constrained_align.config.core import param
from constrained_align.config.runs import ScorersConfig
from constrained_align.config.scoring import ScorerConfig

Mode = Literal["greedy", "sampled"]


@dataclass
class PolicyEvalConfig:
    """Held-out evaluation of a policy: three prompt sets of the embedded eval split."""

    helpful_prompts: int = param(
        16, "HH-RLHF helpful-base prompts (reward, cost)", check=NON_NEGATIVE
    )
    harmful_prompts: int = param(
        16,
        "harmful prompts, Safe RLHF's eval set and AdvBench (reward, cost, harmful ratio)",
        check=NON_NEGATIVE,
    )
    xstest_prompts: int = param(16, "XSTest's safe prompts (over-refusal rate)", check=NON_NEGATIVE)
    max_new_tokens: int = param(48, "response length limit", check=AT_LEAST_1)
    modes: list[Mode] = param(
        ["greedy", "sampled"], "greedy decoding, and seeded sampling at sampling_temperature"
    )
    sampling_temperature: float = param(
        1.0,
        "temperature of the sampled mode (the KL estimate needs 1: samples from π itself)",
        check=NON_NEGATIVE,
    )
    seed: int = param(0, "seed of the prompt subsets and of the sampled mode")
    examples: int = param(
        3, "example completions per model in the report (same prompts)", check=NON_NEGATIVE
    )
    bootstrap_resamples: int = param(
        2000,
        "bootstrap resamples over prompts for every interval and paired difference (seeded "
        "with seed)",
        check=AT_LEAST_1,
    )


@dataclass
class CompareConfig:
    """A comparison of algorithms at one cost limit and comparable budgets."""

    algorithms: list[str] = param(
        ["reference", "dpo", "ppo_lag", "grpo_lag", "c_dpo", "mocan", "sacpo", "safe_dpo"],
        "registry keys, and 'reference' for the untrained model",
    )
    cost_limit: float | None = param(
        None,
        "the one constraint threshold every key is trained to; null = calibrated on the "
        "reference's samples (see cost_limit_fraction)",
    )
    cost_limit_fraction: float = param(
        0.5,
        "calibration: d = m_min + f·(m − m_min) with m the mean cost of the reference samples "
        "of the training prompts and m_min the mean over prompts of their smallest cost, so "
        "0 < f < 1 makes the constraint active (d < m) and the one-shot dual bounded (d > m_min)",
        check=OPEN_UNIT,
    )
    seed: int = param(0, "seed of every run")
    scorers: ScorersConfig = param(
        ScorersConfig(reward="default-reward", cost="default-cost"),
        "the reward and cost models every key trains against: shipped (default-reward, "
        "default-cost), saved folders, or 'tiny'; null = trained with scorer_training (once, "
        "then kept in the user cache)",
    )
    judges: ScorersConfig = param(
        ScorersConfig(reward="judge-reward", cost="judge-cost"),
        "the reward and cost models that judge every model's answers (evaluation only, never "
        "trained against): shipped (judge-reward, judge-cost), saved folders, or 'tiny'; "
        "null = judged by the proxy scorer of that kind (the report says it is not independent)",
    )
    scorer_training: ScorerConfig = param(
        ScorerConfig(backbone="minilm"),
        "how a null reward or cost model is trained ('kind' is set per model)",
    )
    run: dict[str, Any] = param(
        {},
        "partial LM run-config sections (task, model, generation, data, output) merged into "
        "every key's base preset; checked against the LM run config when the comparison loads",
    )
    presets: dict[str, str] = param(
        {}, "base preset per key (default '<key>:tiny'); `run` and `budgets` apply on top"
    )
    budgets: dict[str, dict[str, Any]] = param(
        {},
        "per key, run-config sections that size its training (e.g. {train: {epochs: 1}}); "
        "checked against the key's run config when the comparison is loaded",
    )
    eval: PolicyEvalConfig = field(default_factory=PolicyEvalConfig)
