"""Configs: documented dataclasses, strict YAML loading, dotted overrides, preset lookup."""

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
    to_dict,
)
from constrained_align.config.lm import (
    DataConfig,
    GenerationConfig,
    OutputConfig,
    PolicyConfig,
    ScorersConfig,
    TaskConfig,
)
from constrained_align.config.presets import preset_path, presets_root
from constrained_align.config.schema import (
    DualConfig,
    MultiplierName,
    OptimConfig,
    PIDConfig,
    RunConfig,
    TestbedConfig,
)
from constrained_align.config.scorer import ScorerConfig

__all__ = [
    "ConfigError",
    "DataConfig",
    "DualConfig",
    "GenerationConfig",
    "MultiplierName",
    "OptimConfig",
    "OutputConfig",
    "PIDConfig",
    "PolicyConfig",
    "RunConfig",
    "ScorerConfig",
    "ScorersConfig",
    "TaskConfig",
    "TestbedConfig",
    "apply_overrides",
    "coerce",
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
    "to_dict",
]
