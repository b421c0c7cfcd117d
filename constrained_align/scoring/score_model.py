"""Reward and cost score models over any transformers backbone (ALGORITHMS.md §2.1).

A score model is a backbone plus a head ``Linear(hidden, 1)`` (bias initialised to zero) applied
at every position, giving per-token scores ``(B, L)``; the sequence score is pooled from them:

* ``last``: the value at the last position whose attention mask is 1 (right padding). Decoders
  read it there; training sequences are ``prompt + response + EOS``, so it sits on the EOS.
* ``mean``: the masked mean over positions. The default for bidirectional encoders such as
  all-MiniLM-L6-v2, whose pre-training pooled the same way, so the head starts from a meaningful
  sentence embedding instead of one position's state.
* ``cls``: the first position.

A reward model scores helpfulness (higher is better). A cost model scores harm with the library's
one sign convention: **C > 0 is unsafe**, C = 0 is the decision boundary.

Encoders see the pair as the tokenizer's own two-segment input (``[CLS] prompt [SEP] response
[SEP]`` for BERT); decoders see the chat-templated prompt followed by the response and EOS. The
prompt is always rendered by the tokenizer's chat template (:func:`render_prompt`). Over-long
inputs keep the end of the prompt (the latest turns) and the start of the response.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer
from torch import Tensor, nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from constrained_align.config import ConfigError, from_dict
from constrained_align.data.chat import ensure_chat_template, render_prompt, reply_text
from constrained_align.models.backbones import is_decoder, load_backbone, refusing_remote_code
from constrained_align.scoring import modes
from constrained_align.scoring.shipped import shipped_path
from constrained_align.utils import current_umask

if TYPE_CHECKING:
    from constrained_align.scoring.features import FeatureCache

Kind = Literal["reward", "cost"]
Pooling = Literal["last", "mean", "cls"]
Mode = Literal["full", "frozen", "lora"]
Messages = Sequence[dict[str, str]]

CONFIG_NAME = "score_model.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_VERSION = 1


@dataclass
class ScoreModelConfig:
    """What a saved score model is, beyond its backbone's own ``config.json``."""

    kind: Kind
    backbone: str
    pooling: Pooling
    max_length: int
    decoder: bool
    format_version: int = FORMAT_VERSION
    #: ``full``: every weight saved; ``frozen``: the named backbone's own weights with this
    #: model's head; ``lora``: the named backbone with this model's LoRA adapters and head.
    mode: Mode = "full"
    #: Content hash of the named backbone's weights (``frozen`` and ``lora``; checked on load).
    backbone_sha: str = ""
    #: How the cost head's bias was set (``calibrate.py``): threshold, balanced accuracy, n.
    calibration: dict[str, float] | None = None


@dataclass
class Encoded:
    """One tokenized (prompt, response) input: token ids and segment ids, unpadded."""

    input_ids: list[int]
    token_type_ids: list[int] | None


class ScoreModel(nn.Module):
    """Backbone + linear score head; ``forward`` returns one end score per sequence."""

    def __init__(
        self,
        backbone: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        config: ScoreModelConfig,
    ) -> None:
        super().__init__()
        if getattr(backbone, "pooler", None) is not None:
            # BERT-style poolers (a tanh layer on [CLS]) are never read: the head pools instead.
            # Dropping them also keeps saved and freshly built backbones' weights identical.
            backbone.pooler = None
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.config = config
        self.head = nn.Linear(backbone.config.hidden_size, 1)
        nn.init.zeros_(self.head.bias)
        #: Pooled features of a frozen backbone (:mod:`.features`), set while training a head.
        self.feature_cache: FeatureCache | None = None
        ensure_chat_template(tokenizer)
        self._ensure_pad_token()

    # ---------------------------------------------------------------- construction, saving
    @classmethod
    def from_backbone(
        cls,
        name: str,
        kind: Kind,
        *,
        pooling: Pooling | Literal["auto"] = "auto",
        max_length: int = 256,
        seed: int = 0,
    ) -> ScoreModel:
        """A fresh score model on a named backbone.

        Args:
            name: ``minilm``, ``smollm2``, ``tiny-encoder``, ``tiny-decoder``, a folder or a
                hub id (see :mod:`constrained_align.models.backbones`).
            kind: ``reward`` or ``cost``.
            pooling: ``auto`` reads decoders at the last token and mean-pools encoders.
            max_length: tokens per (prompt, response) input.
            seed: seed of the head's (and a tiny backbone's) initialisation.

        Returns:
            The model, in train mode, with a zero-bias head.
        """
        backbone, tokenizer, _ = load_backbone(name, seed=seed)
        decoder = is_decoder(backbone)
        if pooling == "auto":
            pooling = "last" if decoder else "mean"
        torch.manual_seed(seed)
        config = ScoreModelConfig(kind, name, pooling, max_length, decoder)
        return cls(backbone, tokenizer, config)

    @classmethod
    def from_pretrained(cls, path: str | Path) -> ScoreModel:
        """Load a model written by :meth:`save_pretrained` (safetensors, no remote code), or a
        shipped one by name (``default-cost``, ...; :mod:`.shipped`)."""
        path = shipped_path(path) or Path(path)
        config = read_score_config(path)
        if config.mode != "full":  # the named backbone plus the saved head (and adapters)
            model = cls.from_backbone(
                config.backbone, config.kind, pooling=config.pooling, max_length=config.max_length
            )
            modes.prepare(model, config.mode)
            model.config.calibration = config.calibration
            return modes.load_trained(model, path / modes.HEAD_NAME, config.backbone_sha).eval()
        with refusing_remote_code(str(path), "trust_remote_code"):
            backbone_config = AutoConfig.from_pretrained(path, trust_remote_code=False)
            tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
        model = cls(AutoModel.from_config(backbone_config), tokenizer, config)
        if model.backbone.get_input_embeddings().num_embeddings != len(tokenizer):
            model.backbone.resize_token_embeddings(len(tokenizer))
        try:
            model.load_state_dict(load_file(str(path / WEIGHTS_NAME)))
        except (OSError, RuntimeError, SafetensorError) as err:
            first = str(err).strip().splitlines()[0]
            raise ConfigError(f"{path / WEIGHTS_NAME}: not this model's weights ({first})") from err
        return model.eval()

    def save_pretrained(self, path: str | Path) -> Path:
        """Write weights (safetensors), backbone config, tokenizer and score config.

        The folder is written beside its destination and renamed into place, so a crash never
        leaves a half-written model where a complete one was.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        try:
            if self.config.mode == "full":
                state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
                save_file(_untie(state), str(staging / WEIGHTS_NAME), metadata={"format": "pt"})
                self.backbone.config.save_pretrained(staging)
                self.tokenizer.save_pretrained(staging)
            else:  # the backbone is loaded by name: only what trained is saved
                modes.save_trained(self, staging, modes.HEAD_NAME)
            (staging / CONFIG_NAME).write_text(json.dumps(asdict(self.config), indent=2) + "\n")
            os.chmod(staging, 0o777 & ~current_umask())  # mkdtemp makes it private (0700)
            if path.exists():
                old = path.with_name(f".{path.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(path, old)
                os.replace(staging, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(staging, path)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return path

    def _ensure_pad_token(self) -> None:
        """Give the tokenizer a pad token distinct from EOS (ALGORITHMS.md §2.1).

        "Last non-pad position" must be the EOS, so a tokenizer whose pad is missing or equals
        EOS gets a new ``<pad>`` token; the embedding matrix grows with mean-initialised rows.
        """
        tok = self.tokenizer
        if tok.pad_token_id is None or tok.pad_token_id == tok.eos_token_id:
            tok.add_special_tokens({"pad_token": "<pad>"})
            self.backbone.resize_token_embeddings(len(tok), mean_resizing=True)
        self.backbone.config.pad_token_id = tok.pad_token_id

    # ---------------------------------------------------------------- tokenization
    def encode(self, prompt: str, response: str, context: Messages | None = None) -> Encoded:
        """Tokenize one (prompt, response) with this model's tokenizer and truncation rule.

        Args:
            prompt: the final user turn.
            response: the reply to score.
            context: earlier ``{"role", "content"}`` turns, or None.

        Returns:
            Unpadded ids (and segment ids for encoders), at most ``max_length`` long: the
            prompt keeps its end, the response its start, and neither gets less than half of
            the budget when both are long.
        """
        tok = self.tokenizer
        backend = self._backend()
        prompt_text = render_prompt(tok, prompt, context or [])
        if self.config.decoder:
            response = reply_text(prompt_text, response)
        p = backend.encode(prompt_text, add_special_tokens=False)
        r = backend.encode(response, add_special_tokens=False)
        extra = 1 if self.config.decoder else tok.num_special_tokens_to_add(pair=True)
        budget = self.config.max_length - extra
        keep_prompt = min(len(p.ids), max(budget - len(r.ids), budget // 2))
        p.truncate(keep_prompt, direction="left")
        r.truncate(budget - keep_prompt, direction="right")
        if self.config.decoder:
            return Encoded(p.ids + r.ids + [tok.eos_token_id], None)
        merged = backend.post_process(p, r, add_special_tokens=True)
        return Encoded(merged.ids, merged.type_ids)

    def _backend(self) -> Tokenizer:
        """The fast tokenizer's backend with its own truncation and padding switched off.

        Some tokenizer files carry settings of their own (all-MiniLM-L6-v2's pads and truncates
        every text to 128 tokens); our truncation rule and :meth:`collate` do both instead.
        """
        if getattr(self, "_plain_backend", None) is None:
            plain = Tokenizer.from_str(self.tokenizer.backend_tokenizer.to_str())
            plain.no_truncation()
            plain.no_padding()
            self._plain_backend = plain
        return self._plain_backend

    def collate(self, items: Sequence[Encoded]) -> dict[str, Tensor]:
        """Right-pad encodings into a batch.

        Args:
            items: outputs of :meth:`encode`.

        Returns:
            ``input_ids`` and ``attention_mask`` ``(B, L)`` (and ``token_type_ids`` for
            encoders that take them).
        """
        types = not self.config.decoder and "token_type_ids" in self.tokenizer.model_input_names
        return pad_encoded(items, self.tokenizer.pad_token_id, segments=types)

    # ---------------------------------------------------------------- scoring
    def token_scores(self, input_ids: Tensor, attention_mask: Tensor, **kwargs: Tensor) -> Tensor:
        """``(B, L)`` per-position scores of the head."""
        hidden = self.backbone(
            input_ids=input_ids, attention_mask=attention_mask, **kwargs
        ).last_hidden_state  # (B, L, H)
        return self.head(hidden).squeeze(-1)  # (B, L)

    def pooled(self, input_ids: Tensor, attention_mask: Tensor, **kwargs: Tensor) -> Tensor:
        """``(B, H)`` hidden states pooled as the score is (``config.pooling``)."""
        hidden = self.backbone(
            input_ids=input_ids, attention_mask=attention_mask, **kwargs
        ).last_hidden_state  # (B, L, H)
        if self.config.pooling == "mean":
            mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
            return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        if self.config.pooling == "cls":
            return hidden[:, 0]
        positions = torch.arange(attention_mask.shape[-1], device=attention_mask.device)
        last = (attention_mask * positions).argmax(-1)  # (B,) last 1 in the mask, either padding
        return hidden[torch.arange(len(last), device=last.device), last]

    def forward(self, input_ids: Tensor, attention_mask: Tensor, **kwargs: Tensor) -> Tensor:
        """End scores: the head applied to the pooled hidden state (see the module docstring),
        read from :attr:`feature_cache` when every row is there.

        Args:
            input_ids: ``(B, L)`` token ids.
            attention_mask: ``(B, L)`` 1 on tokens, 0 on padding (left or right).
            **kwargs: other backbone inputs, e.g. ``token_type_ids``.

        Returns:
            ``(B,)`` scores.
        """
        features = None
        if self.feature_cache is not None:
            features = self.feature_cache.lookup(input_ids, attention_mask, **kwargs)
        if features is None:
            features = self.pooled(input_ids, attention_mask, **kwargs)
        return self.head(features.to(self.head.weight.dtype)).squeeze(-1)


def pad_encoded(items: Sequence[Encoded], pad_id: int, *, segments: bool) -> dict[str, Tensor]:
    """Right-pad encodings: ``input_ids`` and ``attention_mask`` ``(B, L)``, and
    ``token_type_ids`` when ``segments`` (encoders that take them)."""
    length = max(len(item.input_ids) for item in items)
    ids = torch.full((len(items), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(items), length), dtype=torch.long)
    types = torch.zeros((len(items), length), dtype=torch.long)
    for i, item in enumerate(items):
        n = len(item.input_ids)
        ids[i, :n] = torch.tensor(item.input_ids)
        mask[i, :n] = 1
        if item.token_type_ids is not None:
            types[i, :n] = torch.tensor(item.token_type_ids)
    batch = {"input_ids": ids, "attention_mask": mask}
    if segments:
        batch["token_type_ids"] = types
    return batch


def read_score_config(path: Path) -> ScoreModelConfig:
    """The ``score_model.json`` of a saved score model, read strictly (an unknown key, a wrong
    type or an invalid ``pooling`` is an error naming the file and the field)."""
    config_file = path / CONFIG_NAME
    if not config_file.is_file():
        raise FileNotFoundError(f"{path} is not a saved score model (no {CONFIG_NAME})")
    try:
        data = json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{config_file}: not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{config_file}: expected a JSON object")
    config = from_dict(ScoreModelConfig, data, source=str(config_file))
    if config.format_version != FORMAT_VERSION:
        raise ConfigError(
            f"{config_file}: format_version {config.format_version} is not {FORMAT_VERSION}, "
            "the one this library reads"
        )
    return config


def _untie(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Clone tensors that share storage: safetensors refuses tied weights."""
    seen: set[int] = set()
    out = {}
    for key, value in state.items():
        ptr = value.data_ptr()
        out[key] = value.clone() if ptr in seen else value
        seen.add(ptr)
    return out
