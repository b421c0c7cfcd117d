"""Stock ``DPOTrainer``'s per-token metrics, for the batches our constrained losses train on.

TRL's fused LM head returns, besides the log-probs, per-position summaries of the logits it
never materialises whole: the entropy, the mean logit and whether the target is the top-1
token. Stock logs four figures from them, each a token-weighted mean over the whole batch
(every process's tokens counted once, not a mean of per-process means):

- ``entropy``: over the completion tokens of both responses;
- ``logits/chosen``, ``logits/rejected``: the mean logit over each side's completion tokens;
- ``mean_token_accuracy``: the fraction of the chosen completions' tokens that are top-1.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def _pooled_ratio(accelerator: Any, total: Tensor, count: Tensor) -> float:
    """Σ total / Σ count over processes (0 when nothing was counted)."""
    pair = torch.stack([total.detach().double(), count.detach().double()])
    pair = accelerator.gather_for_metrics(pair.unsqueeze(0)).reshape(-1, 2).sum(0)
    return float(pair[0] / pair[1]) if pair[1] > 0 else 0.0


def token_metrics(accelerator: Any, outputs: Any, mask: Tensor) -> dict[str, float]:
    """The four token metrics of one ``[chosen; rejected]`` batch.

    Args:
        accelerator: the trainer's accelerator (for the gathers).
        outputs: the fused LM head's outputs of the batch.
        mask: ``(2B, T − 1)`` the shifted completion mask.
    """
    width = mask.size(1)
    mask = mask.to(torch.float64)
    entropy = outputs.entropy[:, -width:].detach()
    mean_logits = outputs.mean_logits[:, -width:].detach()
    top1 = outputs.is_top1[:, -width:]
    chosen_mask, rejected_mask = mask.chunk(2, dim=0)
    chosen_logits, rejected_logits = mean_logits.chunk(2, dim=0)
    chosen_top1, _ = top1.chunk(2, dim=0)
    return {
        "entropy": _pooled_ratio(accelerator, (entropy * mask).sum(), mask.sum()),
        "logits/chosen": _pooled_ratio(
            accelerator, (chosen_logits * chosen_mask).sum(), chosen_mask.sum()
        ),
        "logits/rejected": _pooled_ratio(
            accelerator, (rejected_logits * rejected_mask).sum(), rejected_mask.sum()
        ),
        "mean_token_accuracy": _pooled_ratio(
            accelerator, (chosen_top1 * chosen_mask).sum(), chosen_mask.sum()
        ),
    }
