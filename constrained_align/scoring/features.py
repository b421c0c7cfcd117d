"""Frozen-backbone training: each input's pooled backbone features computed once.

A score model's end score is ``head(pool(backbone(x)))`` (the head is linear, so pooling the
per-token scores and pooling the hidden states give the same number). With the backbone frozen
(``train-scorer --mode frozen``) the pooled hidden state of an input never changes, so
:class:`FeatureCache` computes it once per distinct input — in length-sorted batches under
``inference_mode`` — and :meth:`ScoreModel.forward` reads it from there instead of running
the backbone: an epoch over a few thousand pairs then takes well under a second, and the
head can train for as many epochs as it needs.

Features are also kept on disk under the user cache (``features/``), keyed by the content
hash of the backbone's weights, the pooling and the input's token ids, so a second training
run on the same data (another seed, the other kind, the judge) skips the backbone entirely.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from tqdm.auto import tqdm

from constrained_align.utils.cache import DiskCache, content_key, state_fingerprint

if TYPE_CHECKING:
    from constrained_align.scoring.score_model import Encoded, ScoreModel


def batch_keys(input_ids: Tensor, attention_mask: Tensor, **kwargs: Tensor) -> list[bytes]:
    """The lookup key of each row of a right-padded batch: its token ids (and segment ids when
    the model takes them), padding cut off."""
    types = kwargs.get("token_type_ids")
    keys = []
    for i, length in enumerate(attention_mask.sum(-1).tolist()):
        row = input_ids[i, :length]
        if types is not None:
            row = torch.cat([row, row.new_full((1,), -1), types[i, :length]])
        keys.append(row.to(torch.int64).cpu().numpy().tobytes())
    return keys


class FeatureCache:
    """Pooled backbone features of inputs, by their token ids.

    Args:
        model: the score model whose frozen backbone computes the features.
        disk: a folder that keeps features between runs, or None for memory only.
    """

    def __init__(self, model: ScoreModel, disk: str | Path | None = None) -> None:
        self.table: dict[bytes, Tensor] = {}
        self.disk = DiskCache(disk) if disk is not None else None
        self._salt = content_key(
            state_fingerprint(model.backbone), model.config.pooling, model.config.backbone
        )

    def __len__(self) -> int:
        return len(self.table)

    def _disk_key(self, key: bytes) -> str:
        return content_key(self._salt, key)

    def fill(
        self, model: ScoreModel, items: Sequence[Encoded], batch_size: int, *, progress: bool
    ) -> None:
        """Compute (or read from disk) the features of every input not cached yet."""
        missing: dict[bytes, Encoded] = {}
        for item in items:
            (key,) = batch_keys(**model.collate([item]))
            if key in self.table or key in missing:
                continue
            stored = self.disk.get(self._disk_key(key)) if self.disk is not None else None
            if stored is not None:
                self.table[key] = stored
            else:
                missing[key] = item
        keys = sorted(missing, key=lambda k: len(missing[k].input_ids))
        bar = tqdm(total=len(keys), desc="backbone features", disable=not progress or not keys)
        with bar, torch.inference_mode():
            for start in range(0, len(keys), batch_size):
                part = keys[start : start + batch_size]
                pooled = model.pooled(**model.collate([missing[k] for k in part]))
                for key, row in zip(part, pooled.float().cpu()):
                    self.table[key] = row.clone()
                    if self.disk is not None:
                        self.disk.put(self._disk_key(key), self.table[key])
                bar.update(len(part))

    def lookup(self, input_ids: Tensor, attention_mask: Tensor, **kwargs: Tensor) -> Tensor | None:
        """``(B, H)`` features of a right-padded batch, or None when a row is not cached."""
        rows = [self.table.get(k) for k in batch_keys(input_ids, attention_mask, **kwargs)]
        if any(row is None for row in rows):
            return None
        return torch.stack(rows).to(input_ids.device)  # type: ignore[arg-type]
