"""What a score model trains and saves: ``full``, ``frozen`` or ``lora`` (``train-scorer --mode``).

- ``full``: every weight trains; the saved folder holds the whole model (about 90 MB for
  all-MiniLM-L6-v2).
- ``frozen``: only the head ``Linear(H, 1)`` trains, on features computed once
  (:mod:`.features`); the saved folder holds the head (a few KB) and names its backbone, which
  is loaded by that name (``minilm``, ``smollm2``, a folder) and must be the same weights: the
  score config records their content hash and loading checks it.
- ``lora``: LoRA adapters (peft's, rank :data:`LORA_RANK` on the attention projections) and
  the head train; the folder holds both (a few hundred KB) and names the backbone.

The small modes are what the shipped ``default-*`` and ``judge-*`` models use (``defaults/``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from constrained_align.config import ConfigError
from constrained_align.utils.cache import content_key

if TYPE_CHECKING:
    from constrained_align.scoring.score_model import ScoreModel

#: The trained part of a ``frozen`` or ``lora`` model (head, and adapters for ``lora``).
HEAD_NAME = "head.safetensors"
LORA_RANK = 8
LORA_ALPHA = 16
#: Attention projections that get adapters: BERT-style encoders, then Llama-style decoders.
LORA_TARGETS = (("query", "key", "value"), ("q_proj", "k_proj", "v_proj", "o_proj"))


def weights_digest(module: nn.Module) -> str:
    """Content hash of a module's parameters that ignores their names and order (a library
    version that renames or reorders a backbone's parameters keeps its digest)."""
    return content_key(*sorted(content_key(p.detach()) for p in module.parameters()))


def lora_targets(backbone: nn.Module) -> list[str]:
    """The first family of :data:`LORA_TARGETS` whose projections the backbone has."""
    names = {
        name.rsplit(".", 1)[-1] for name, m in backbone.named_modules() if isinstance(m, nn.Linear)
    }
    for family in LORA_TARGETS:
        if set(family) <= names:
            return list(family)
    raise ConfigError(
        f"mode lora: no known attention projections in {type(backbone).__name__} "
        f"(looked for {' or '.join('/'.join(f) for f in LORA_TARGETS)})"
    )


def prepare(model: ScoreModel, mode: str) -> ScoreModel:
    """Set which weights of ``model`` train: all (``full``), the head (``frozen``), or new LoRA
    adapters and the head (``lora``); records the mode in ``model.config``."""
    from peft import LoraConfig, inject_adapter_in_model

    model.config.mode = mode  # type: ignore[assignment]
    if mode == "full":
        return model
    model.config.backbone_sha = weights_digest(model.backbone)
    model.backbone.requires_grad_(False)
    if mode == "lora":
        config = LoraConfig(
            r=LORA_RANK,
            lora_alpha=LORA_ALPHA,
            lora_dropout=0.0,
            target_modules=lora_targets(model.backbone),
        )
        inject_adapter_in_model(config, model.backbone)
    return model


def trained_state(model: ScoreModel) -> dict[str, Tensor]:
    """The tensors a ``frozen`` or ``lora`` model saves: the head, and the LoRA adapters."""
    return {
        name: value.detach().contiguous().cpu()
        for name, value in model.state_dict().items()
        if name.startswith("head.") or ".lora_" in name
    }


def save_trained(model: ScoreModel, folder: Path, name: str) -> None:
    """Write :func:`trained_state` as ``folder/name`` (safetensors)."""
    save_file(trained_state(model), str(folder / name), metadata={"format": "pt"})


def load_trained(model: ScoreModel, path: Path, backbone_sha: str) -> ScoreModel:
    """Load a ``frozen``/``lora`` model's saved head (and adapters) into ``model``, built on
    its named backbone by :func:`prepare`; the backbone must be the weights it was trained on
    (``backbone_sha``) and every expected tensor must be in the file."""
    if model.config.backbone_sha != backbone_sha:
        raise ConfigError(
            f"{path}: trained on other {model.config.backbone!r} weights than those installed "
            f"(backbone_sha {backbone_sha[:12]}…, installed {model.config.backbone_sha[:12]}…)"
        )
    try:
        state = load_file(str(path))
    except (OSError, SafetensorError) as err:
        raise ConfigError(f"{path}: not a readable safetensors file ({err})") from err
    expected = set(trained_state(model))
    if set(state) != expected:
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        raise ConfigError(
            f"{path}: not this model's weights (missing {missing[:3]}, extra {extra[:3]})"
        )
    model.load_state_dict(state, strict=False)
    return model
