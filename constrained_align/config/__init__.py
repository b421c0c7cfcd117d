"""Configs: documented dataclasses, strict YAML loading, dotted overrides, preset lookup.

- :mod:`.core` — strict loading (unknown key → the key, the file and the closest valid key);
- :mod:`.presets` — the one preset lookup (``c_dpo:tiny``, ``compare:default``, a YAML path);
- :mod:`.sections` — what every algorithm's ``train`` section shares: the dual, the optimizer;
- :mod:`.runs` — run configs, one type per backend (testbed, causal LM) and their sections;
- :mod:`.scoring` — training a reward or cost model;
- :mod:`.compare` — a comparison and the held-out policy evaluation.
"""

from constrained_align.config.checks import (
    AT_LEAST_1,
    NON_NEGATIVE,
    NOT_ONE,
    POSITIVE,
    UNIT,
    NotEqual,
    Range,
    validate,
)
from constrained_align.config.compare import CompareConfig, PolicyEvalConfig
from constrained_align.config.core import (
    ConfigError,
    apply_overrides,
    coerce,
    dump_yaml,
    field_docs,
    from_dict,
    leaf_paths,
    load_yaml,
    merge_mappings,
    param,
    resolve_key,
    split_override,
    to_dict,
)
from constrained_align.config.presets import (
    COMPARE,
    compare_presets_root,
    preset_path,
    presets_root,
)
from constrained_align.config.runs import (
    RUN_CONFIGS,
    DataConfig,
    EngineConfig,
    GenerationConfig,
    LMRunConfig,
    LMTaskConfig,
    OutputConfig,
    PolicyConfig,
    RunConfig,
    ScorersConfig,
    TestbedConfig,
    TestbedRunConfig,
    TestbedTaskConfig,
)
from constrained_align.config.scoring import ScorerConfig
from constrained_align.config.sections import (
    LM_CRITIC_LR,
    LM_LR,
    TESTBED_LR,
    DualConfig,
    MultiplierName,
    OptimConfig,
    PIDConfig,
)

__all__ = [
    "AT_LEAST_1",
    "COMPARE",
    "LM_CRITIC_LR",
    "LM_LR",
    "NON_NEGATIVE",
    "NOT_ONE",
    "POSITIVE",
    "RUN_CONFIGS",
    "TESTBED_LR",
    "UNIT",
    "CompareConfig",
    "ConfigError",
    "DataConfig",
    "DualConfig",
    "EngineConfig",
    "GenerationConfig",
    "LMRunConfig",
    "LMTaskConfig",
    "MultiplierName",
    "NotEqual",
    "OptimConfig",
    "OutputConfig",
    "PIDConfig",
    "PolicyConfig",
    "PolicyEvalConfig",
    "Range",
    "RunConfig",
    "ScorerConfig",
    "ScorersConfig",
    "TestbedConfig",
    "TestbedRunConfig",
    "TestbedTaskConfig",
    "apply_overrides",
    "coerce",
    "compare_presets_root",
    "dump_yaml",
    "field_docs",
    "from_dict",
    "leaf_paths",
    "load_yaml",
    "merge_mappings",
    "param",
    "preset_path",
    "presets_root",
    "resolve_key",
    "split_override",
    "to_dict",
    "validate",
]
