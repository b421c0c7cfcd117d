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
from typing import Literal

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from constrained_align.data.chat import ensure_chat_template, render_prompt
from constrained_align.models.backbones import is_decoder, load_backbone

Kind = Literal["reward", "cost"]
Pooling = Literal["last", "mean", "cls"]
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
        """A fresh score model on a named backbone (``minilm``, a folder, ``tiny-encoder``...).

        ``pooling="auto"`` reads decoders at the last token and mean-pools encoders.
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
        """Load a model written by :meth:`save_pretrained` (safetensors, no remote code)."""
        path = Path(path)
        config_file = path / CONFIG_NAME
        if not config_file.is_file():
            raise FileNotFoundError(f"{path} is not a saved score model (no {CONFIG_NAME})")
        config = ScoreModelConfig(**json.loads(config_file.read_text()))
        backbone = AutoModel.from_config(AutoConfig.from_pretrained(path))
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = cls(backbone, tokenizer, config)
        if model.backbone.get_input_embeddings().num_embeddings != len(tokenizer):
            model.backbone.resize_token_embeddings(len(tokenizer))
        model.load_state_dict(load_file(str(path / WEIGHTS_NAME)))
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
            state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
            save_file(_untie(state), str(staging / WEIGHTS_NAME), metadata={"format": "pt"})
            self.backbone.config.save_pretrained(staging)
            self.tokenizer.save_pretrained(staging)
            (staging / CONFIG_NAME).write_text(json.dumps(asdict(self.config), indent=2) + "\n")
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
        """Tokenize one (prompt, response) with this model's tokenizer and truncation rule."""
        tok = self.tokenizer
        backend = tok.backend_tokenizer
        prompt_text = render_prompt(tok, prompt, context or [])
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

    def collate(self, items: Sequence[Encoded]) -> dict[str, Tensor]:
        """Right-pad a list of encodings into ``input_ids``, ``attention_mask`` (and types)."""
        length = max(len(item.input_ids) for item in items)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(items), length), pad, dtype=torch.long)
        mask = torch.zeros((len(items), length), dtype=torch.long)
        types = torch.zeros((len(items), length), dtype=torch.long)
        for i, item in enumerate(items):
            n = len(item.input_ids)
            ids[i, :n] = torch.tensor(item.input_ids)
            mask[i, :n] = 1
            if item.token_type_ids is not None:
                types[i, :n] = torch.tensor(item.token_type_ids)
        batch = {"input_ids": ids, "attention_mask": mask}
        if not self.config.decoder and "token_type_ids" in self.tokenizer.model_input_names:
            batch["token_type_ids"] = types
        return batch

    # ---------------------------------------------------------------- scoring
    def token_scores(self, input_ids: Tensor, attention_mask: Tensor, **kwargs: Tensor) -> Tensor:
        """``(B, L)`` per-position scores of the head."""
        hidden = self.backbone(
            input_ids=input_ids, attention_mask=attention_mask, **kwargs
        ).last_hidden_state  # (B, L, H)
        return self.head(hidden).squeeze(-1)  # (B, L)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, **kwargs: Tensor) -> Tensor:
        """``(B,)`` end scores pooled from the per-position scores (see the module docstring)."""
        scores = self.token_scores(input_ids, attention_mask, **kwargs)  # (B, L)
        mask = attention_mask.to(scores.dtype)
        if self.config.pooling == "mean":
            return (scores * mask).sum(-1) / mask.sum(-1).clamp_min(1.0)
        if self.config.pooling == "cls":
            return scores[:, 0]
        last = attention_mask.sum(-1).clamp_min(1) - 1  # (B,) right padding: last 1 in the mask
        return scores.gather(1, last[:, None]).squeeze(1)


def _untie(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Clone tensors that share storage: safetensors refuses tied weights."""
    seen: set[int] = set()
    out = {}
    for key, value in state.items():
        ptr = value.data_ptr()
        out[key] = value.clone() if ptr in seen else value
        seen.add(ptr)
    return out
