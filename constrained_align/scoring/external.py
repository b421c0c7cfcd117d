"""Reward and cost models trained elsewhere, behind our score models' interface.

Two layouts, recognised from ``config.json`` alone (no code from a folder ever runs):

* **Safe RLHF score models** (Dai et al., "Safe RLHF", ICLR 2024; PKU-Alignment/safe-rlhf,
  ``safe_rlhf/models/score_model/``), e.g. ``PKU-Alignment/beaver-7b-v1.0-reward`` / ``-cost``:
  ``architectures`` names a ``*ForScore`` class or the config has Safe RLHF's ``score_dim``
  (beside ``score_type``, ``bias``/``score_bias``, ``do_normalize``, ``normalizer_type``,
  ``momentum``, ``mean``, ``var``). The weights hold the backbone under its base-model prefix
  (``model.`` for Llama) and ``score_head`` = ``Linear(hidden, 1)`` (bias if present); the end
  score is ``score_head`` of the hidden state at the last position whose mask is 1, in float32.
  The ``normalizer.*`` statistics are not applied: Safe RLHF's PPO-Lag sets ``do_normalize``
  from ``--normalize_reward``/``--normalize_cost`` (default off), so it reads raw end scores.
* **One-label sequence classifiers**: ``*ForSequenceClassification`` with ``num_labels == 1``;
  the score is ``logits[:, 0]``, pooled as transformers pools it.

Input text. Safe RLHF models get its template (after ``format_prompt``,
``safe_rlhf/datasets/utils.py``) as their chat template: ``BEGINNING OF CONVERSATION: USER:
{prompt} ASSISTANT:{reply}<eos>``, earlier replies also closed by EOS, no system turn, BOS from
the tokenizer. A classifier gets the whole conversation rendered by its chat template, or
without one the tokenizer's text pair (earlier turns and prompt joined by blank lines; reply),
``[CLS] prompt [SEP] reply [SEP]`` for BERT (a decoder's pair may just concatenate).

Signs: a reward is helpfulness, higher is better; a cost is harm, **C > 0 unsafe**. Safe RLHF
trains its cost model with that same convention (a sign term pushes unsafe responses above 0),
so beaver costs are used as they come. The caller names the kind; a ``score_type`` that
disagrees is an error.

Weights: safetensors (single or sharded), or PyTorch ``.bin`` read tensors-only
(``weights_only=True``, as :func:`~constrained_align.utils.io.load_tensors`); nothing in them
runs. A hub id loads only where transformers reaches the hub or its cache.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import safe_open
from torch import Tensor, nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging
from transformers.utils.hub import cached_file

from constrained_align.config import ConfigError
from constrained_align.data.chat import render_prompt, to_messages
from constrained_align.models.backbones import HUB_ID, refusing_remote_code
from constrained_align.scoring.score_model import Encoded, Messages, pad_encoded
from constrained_align.utils.io import load_tensors

Layout = Literal["safe_rlhf", "sequence_classification"]
TextFormat = Literal["safe_rlhf", "chat_template", "text_pair"]

#: Safe RLHF's prompt format as a chat template (our text, after ``format_prompt``).
SAFE_RLHF_CHAT_TEMPLATE = (
    "{{ 'BEGINNING OF CONVERSATION: ' }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ 'USER: ' + message['content'] + ' ASSISTANT:' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}"
    "{% endif %}{% endfor %}"
)
#: Tokens per input: Safe RLHF's ``--max_length`` default, and a cap for other classifiers.
SAFE_RLHF_MAX_LENGTH = 512
CLASSIFIER_MAX_LENGTH = 2048
#: Weight files (single, sharded) in the order they are looked for (transformers' names).
_ST, _BIN = "model.safetensors", "pytorch_model.bin"
WEIGHT_FILES = ((_ST, f"{_ST}.index.json"), (_BIN, f"{_BIN}.index.json"))
HEAD_PREFIX = "score_head."


@dataclass
class ExternalConfig:
    """What an external score model is (read from its ``config.json``, not saved by us)."""

    kind: str
    layout: Layout
    source: str
    architecture: str
    max_length: int
    text_format: TextFormat


class ExternalScoreModel(nn.Module):
    """A reward or cost model trained elsewhere, with :class:`ScoreModel`'s interface
    (``encode``, ``collate``, ``forward`` → ``(B,)`` end scores), so ``TextScorer`` wraps it.

    Args:
        network: the bare backbone (Safe RLHF, with ``head`` its ``score_head``) or the whole
            classifier (``head`` None).
        pad_token_id: the id batches are padded with.
    """

    def __init__(
        self,
        network: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        config: ExternalConfig,
        *,
        pad_token_id: int,
        head: nn.Linear | None = None,
    ) -> None:
        super().__init__()
        self.network = network
        self.head = head
        self.tokenizer = tokenizer
        self.config = config
        self.pad_token_id = pad_token_id
        self._specials = set(tokenizer.all_special_ids)

    def encode(self, prompt: str, response: str, context: Messages | None = None) -> Encoded:
        """Tokenize one (prompt, response) in the model's own format (module docstring).

        Returns:
            Unpadded ids, at most ``max_length`` long: an over-long input keeps its leading and
            trailing special token, the end of the prompt and the start of the response
            (neither less than half of the budget when both are long).
        """
        tok, limit = self.tokenizer, self.config.max_length
        if self.config.text_format == "text_pair":
            turns = [m["content"] for m in context or ()]
            text = "\n\n".join([*turns, prompt])
            enc = tok(text, response, truncation="longest_first", max_length=limit)
            return Encoded(enc["input_ids"], enc.get("token_type_ids"))
        specials = self.config.text_format == "safe_rlhf"  # BOS, as Safe RLHF's tokenize
        messages = [*to_messages(prompt, context), {"role": "assistant", "content": response}]
        whole = tok.apply_chat_template(messages, tokenize=False)
        ids = tok(whole, add_special_tokens=specials)["input_ids"]
        if len(ids) > limit:
            prompt_text = render_prompt(tok, prompt, context)
            prompt_ids = tok(prompt_text, add_special_tokens=specials)["input_ids"]
            ids = fit(ids, prompt_ids, limit, self._specials)
        return Encoded(ids, None)

    def collate(self, items: Sequence[Encoded]) -> dict[str, Tensor]:
        """Right-pad encodings: ``input_ids``, ``attention_mask`` (and ``token_type_ids`` for a
        text-pair encoder that takes them), each ``(B, L)``."""
        pair = self.config.text_format == "text_pair"
        types = pair and "token_type_ids" in self.tokenizer.model_input_names
        return pad_encoded(items, self.pad_token_id, segments=types)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, **kwargs: Tensor) -> Tensor:
        """``(B,)`` float32 end scores of a right-padded batch (``(B, L)`` inputs)."""
        if self.head is None:
            out = self.network(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
            return out.logits[:, 0].float()
        hidden = self.network(
            input_ids=input_ids, attention_mask=attention_mask
        ).last_hidden_state  # (B, L, H)
        positions = torch.arange(attention_mask.shape[-1], device=attention_mask.device)
        last = (attention_mask * positions).argmax(-1)  # (B,) last position whose mask is 1
        end = hidden[torch.arange(len(last), device=last.device), last]  # (B, H)
        return self.head(end).squeeze(-1).float()


def fit(ids: list[int], prompt_ids: list[int], limit: int, specials: set[int]) -> list[int]:
    """Cut an over-long input to ``limit`` tokens (:meth:`ExternalScoreModel.encode`'s rule).

    ``prompt_ids`` is the prompt tokenized alone: the response starts where it and ``ids``
    first differ. A leading or trailing token in ``specials`` is always kept.
    """
    split = 0
    while split < min(len(ids), len(prompt_ids)) and ids[split] == prompt_ids[split]:
        split += 1
    head = 1 if split > 0 and ids[0] in specials else 0
    tail = 1 if split < len(ids) and ids[-1] in specials else 0
    prompt, response = ids[head:split], ids[split : len(ids) - tail]
    budget = limit - head - tail
    keep = min(len(prompt), max(budget - len(response), budget // 2))
    kept = prompt[len(prompt) - keep :] + response[: budget - keep]
    return ids[:head] + kept + ids[len(ids) - tail :]


# ---------------------------------------------------------------- recognising and loading
def read_config(spec: str) -> PretrainedConfig:
    """The ``config.json`` of a folder or hub id, refusing models that ship their own code."""
    where = "config.json" if Path(spec).is_dir() else "config.json (no such folder; as a hub id)"
    with _loading(spec, where):
        return AutoConfig.from_pretrained(spec, trust_remote_code=False)


def layout_of(spec: str, config: PretrainedConfig, kind: str | None) -> Layout:
    """Which layout ``config`` describes, checked against the caller's ``kind``.

    Raises:
        ConfigError: neither layout, several scores or labels, a Safe RLHF ``score_type``
            other than ``kind``, or a classifier whose kind the caller did not name.
    """
    file = f"{spec}/config.json"
    archs = list(getattr(config, "architectures", None) or [])
    if any(a.endswith("ForScore") for a in archs) or hasattr(config, "score_dim"):
        if getattr(config, "score_dim", 1) != 1:
            raise ConfigError(f"{file}: score_dim is {config.score_dim}; only 1 is supported")
        score_type = getattr(config, "score_type", None)
        if score_type not in (None, "reward", "cost"):
            raise ConfigError(f"{file}: score_type {score_type!r} is neither reward nor cost")
        if kind is not None and score_type not in (None, kind):
            raise ConfigError(f"{file}: score_type is {score_type!r}, not {kind!r}")
        if kind is None and score_type is None:
            raise ConfigError(f"{file}: no score_type: name its kind (reward or cost)")
        return "safe_rlhf"
    if any(a.endswith("ForSequenceClassification") for a in archs):
        if config.num_labels != 1:
            raise ConfigError(
                f"{file}: a {archs[0]} with num_labels {config.num_labels}; a reward or cost "
                "model has one label (a single score)"
            )
        if kind is None:
            raise ConfigError(f"{file}: a sequence classifier: name its kind (reward or cost)")
        return "sequence_classification"
    raise ConfigError(
        f"{spec} is not a saved score-model folder (no score_model.json), a Safe RLHF score "
        f"model (*ForScore) nor a one-label *ForSequenceClassification model ({file} "
        f"architectures: {archs})"
    )


def describe_external(spec: str, kind: str) -> str:
    """One line on what ``spec`` holds, checked from its ``config.json`` only (a dry run)."""
    config = read_config(spec)
    layout = layout_of(spec, config, kind)
    arch = (getattr(config, "architectures", None) or ["?"])[0]
    what = "Safe RLHF score model" if layout == "safe_rlhf" else "one-label classifier"
    return f"{spec}: local folder ({what}, {arch})"


def load_external(
    spec: str,
    kind: str | None,
    *,
    max_length: int | None = None,
    dtype: str = "auto",
) -> ExternalScoreModel:
    """Load a Safe RLHF score model or a one-label sequence classifier (module docstring).

    Args:
        spec: a folder, or a hub id (loads only when the hub or its cache is reachable).
        kind: ``reward`` or ``cost``; None takes a Safe RLHF model's ``score_type``.
        max_length: tokens per input; default 512 for Safe RLHF (its training length), else
            the tokenizer's limit capped at 2048.
        dtype: weights dtype name; ``auto`` keeps the checkpoint's.

    Raises:
        ConfigError: not a folder or hub id, neither layout, the other kind, missing weights.
        RemoteCodeError: the model needs its own Python code.
    """
    if not Path(spec).is_dir() and not HUB_ID.fullmatch(spec):
        raise ConfigError(f"{spec} is not a saved score-model folder, nor a hub id (owner/name)")
    config = read_config(spec)
    layout = layout_of(spec, config, kind)
    with _loading(spec, "tokenizer"):
        tokenizer = AutoTokenizer.from_pretrained(spec, trust_remote_code=False)
    if layout == "safe_rlhf":
        head = _safe_rlhf_head(spec, config)
        network = _pretrained(AutoModel, spec, config, dtype)
        head.to(network.dtype)
        tokenizer.chat_template = SAFE_RLHF_CHAT_TEMPLATE
        text_format: TextFormat = "safe_rlhf"
        default_length = SAFE_RLHF_MAX_LENGTH
        # Padding is masked and the score read from the mask, so any id pads.
        pad = _first_id(tokenizer.pad_token_id, tokenizer.eos_token_id, 0)
    else:
        head = None
        network = _pretrained(AutoModelForSequenceClassification, spec, config, dtype)
        text_format = "chat_template" if getattr(tokenizer, "chat_template", None) else "text_pair"
        positions = getattr(config, "max_position_embeddings", CLASSIFIER_MAX_LENGTH)
        default_length = min(tokenizer.model_max_length, positions, CLASSIFIER_MAX_LENGTH)
        # transformers finds a decoder's last token through config.pad_token_id: pad with it.
        text_config = network.config.get_text_config()
        pad = _first_id(text_config.pad_token_id, tokenizer.pad_token_id, tokenizer.eos_token_id)
        text_config.pad_token_id = pad
    arch = (config.architectures or [type(network).__name__])[0]
    kind = kind or config.score_type
    ext = ExternalConfig(kind, layout, spec, arch, max_length or default_length, text_format)
    return ExternalScoreModel(network, tokenizer, ext, pad_token_id=pad, head=head).eval()


def _pretrained(auto: Any, spec: str, config: PretrainedConfig, dtype: str) -> PreTrainedModel:
    """``auto.from_pretrained``, refusing a checkpoint that lacks weights (they would stay
    random); keys it does not use (Safe RLHF's head, normalizer, old buffers) are dropped."""
    with _quiet_transformers(), _loading(spec, "weights"):
        model, info = auto.from_pretrained(
            spec, config=config, dtype=dtype, trust_remote_code=False, output_loading_info=True
        )
    if info["missing_keys"]:
        missing = sorted(info["missing_keys"])
        raise ConfigError(
            f"{spec}: the checkpoint lacks {len(missing)} weight(s) of {type(model).__name__} "
            f"(e.g. {missing[0]}); refusing to score with random weights"
        )
    return model


def _safe_rlhf_head(spec: str, config: PretrainedConfig) -> nn.Linear:
    """Safe RLHF's ``score_head`` (``Linear(hidden, 1)``, bias if the checkpoint has one)."""
    state = _head_tensors(spec)
    if f"{HEAD_PREFIX}weight" not in state:
        raise ConfigError(f"{spec}: no {HEAD_PREFIX}weight in its weights (a Safe RLHF model?)")
    weight = state[f"{HEAD_PREFIX}weight"]
    if tuple(weight.shape) != (1, config.hidden_size):
        raise ConfigError(
            f"{spec}: {HEAD_PREFIX}weight has shape {tuple(weight.shape)}, "
            f"not (1, {config.hidden_size})"
        )
    head = nn.Linear(config.hidden_size, 1, bias=f"{HEAD_PREFIX}bias" in state)
    head.load_state_dict({k.removeprefix(HEAD_PREFIX): v for k, v in state.items()})
    return head


def _head_tensors(spec: str) -> dict[str, Tensor]:
    """The ``score_head.*`` tensors of a checkpoint, single file or sharded."""
    for single, index in WEIGHT_FILES:
        index_file = _file(spec, index)
        if index_file is not None:
            weight_map = json.loads(Path(index_file).read_text(encoding="utf-8"))["weight_map"]
            shards = sorted({f for k, f in weight_map.items() if k.startswith(HEAD_PREFIX)})
            files = [_file(spec, shard) for shard in shards]
            return {k: v for f in files if f for k, v in _read(f).items()}
        single_file = _file(spec, single)
        if single_file is not None:
            return _read(single_file)
    names = ", ".join(name for pair in WEIGHT_FILES for name in pair)
    raise ConfigError(f"{spec}: no weights ({names})")


def _read(file: str) -> dict[str, Tensor]:
    """The ``score_head.*`` tensors of one weights file (safetensors, or tensors-only .bin)."""
    if file.endswith(".safetensors"):
        with safe_open(file, framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys() if k.startswith(HEAD_PREFIX)}  # noqa: SIM118
    state = load_tensors(file, what="score-model weights file")
    if not isinstance(state, dict):
        raise ConfigError(f"{file}: expected a dict of tensors")
    return {k: v for k, v in state.items() if k.startswith(HEAD_PREFIX)}


def _file(spec: str, name: str) -> str | None:
    """``name`` in a folder or hub repository (fetched into the hub cache), or None."""
    with _loading(spec, name):
        return cached_file(spec, name, _raise_exceptions_for_missing_entries=False)


def _first_id(*ids: int | None) -> int:
    """The first id that is not None."""
    found = [i for i in ids if i is not None]
    if not found:
        raise ConfigError("the tokenizer has neither a pad nor an EOS token to pad with")
    return found[0]


@contextmanager
def _loading(spec: str, what: str) -> Iterator[None]:
    """One clear error for a model needing its own code or a file not to be had (offline?)."""
    try:
        with refusing_remote_code(spec, "trust_remote_code"):
            yield
    except OSError as err:
        lines = str(err).strip().splitlines()
        first = lines[0] if lines else type(err).__name__
        raise ConfigError(f"{spec}: cannot load its {what} ({first})") from err


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No load report (it lists Safe RLHF's head as unexpected) nor progress bar for a load."""
    verbosity = hf_logging.get_verbosity()
    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar:
            hf_logging.enable_progress_bar()
