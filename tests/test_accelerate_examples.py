"""The accelerate configs in ``examples/accelerate`` load with accelerate's own loader (the one
``accelerate launch --config_file`` uses) and say what docs/SEVERAL_GPUS.md says they do: one
machine, 8 processes, bf16, and the engine of each file (DDP; FSDP2 with transformer-layer
wrapping and sharded checkpoints; ZeRO-3 without offload). Nothing is launched."""

from __future__ import annotations

from itertools import takewhile
from pathlib import Path
from typing import Any

import pytest
from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file

FOLDER = Path(__file__).resolve().parents[1] / "examples" / "accelerate"

#: file name → (distributed type, the engine's own settings that must hold)
EXPECTED: dict[str, tuple[str, dict[str, Any]]] = {
    "ddp.yaml": ("MULTI_GPU", {}),
    "fsdp.yaml": (
        "FSDP",
        {
            "fsdp_version": 2,
            "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "fsdp_state_dict_type": "SHARDED_STATE_DICT",
            "fsdp_activation_checkpointing": False,
            "fsdp_offload_params": False,
        },
    ),
    "deepspeed_zero3.yaml": (
        "DEEPSPEED",
        {"zero_stage": 3, "offload_optimizer_device": "none", "offload_param_device": "none"},
    ),
}


def test_every_example_is_checked() -> None:
    assert sorted(p.name for p in FOLDER.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_loads_with_the_expected_engine(name: str) -> None:
    path = FOLDER / name
    config = load_config_from_file(str(path))
    kind, settings = EXPECTED[name]
    assert isinstance(config, ClusterConfig)
    assert config.distributed_type.value == kind
    assert config.mixed_precision == "bf16"
    assert (config.num_machines, config.num_processes) == (1, 8)
    assert not config.use_cpu
    sections = {"FSDP": config.fsdp_config, "DEEPSPEED": config.deepspeed_config}
    own = sections.pop(kind, {})
    assert {key: own.get(key) for key in settings} == settings
    assert not any(sections.values())  # no section of another engine


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_header_gives_the_launch_command(name: str) -> None:
    """Each file opens with comments that end in the exact launch command for that file."""
    lines = (FOLDER / name).read_text(encoding="utf-8").splitlines()
    header = list(takewhile(lambda line: line.startswith("#"), lines))
    assert header, f"{name} has no top comment"
    assert any(
        f"accelerate launch --config_file examples/accelerate/{name}" in line for line in header
    )
