"""``scoring``: score-model texts per second, our ``TextScorer`` against a plain loop.

One ``cost`` score model (MiniLM, random head: timing does not need a trained one; quick:
``tiny-encoder``), 256 (prompt, response) texts of the embedded train data (both responses of
the first 128 pairs, with their earlier turns), batches of 64. Ours:
``TextScorer(model).score(prompts, responses, contexts)``. The plain loop goes through the
texts in input order, 64 at a time: the model's own ``encode`` and ``collate``, the backbone's
forward, the head, the pooling the model is configured with, under ``torch.no_grad()``. Both
tokenize inside the timed call. FLOP per text: 2·N per real token of the encoder (N = its
linear layers' weights; attention scores and the 1-wide head left out), at M = the real
tokens of a batch.
"""

from __future__ import annotations

from typing import Any

import torch

from benchmarks.common import (
    Bench,
    CaseResult,
    bound_share,
    close,
    median,
    time_calls,
)
from benchmarks.flops import (
    forward_gemms,
    model_dims,
)

TEXTS = 256
BATCH = 64
TOLERANCE = 1e-5


def _texts() -> tuple[list[str], list[str], list[list[dict[str, str]]]]:
    """Prompts, responses and contexts of :data:`TEXTS` embedded (prompt, response) pairs."""
    from constrained_align.data import load_default

    rows = load_default("train").to_list()[: TEXTS // 2]
    prompts = [r["prompt"] for r in rows for _ in (0, 1)]
    responses = [r[f"response_{i}"] for r in rows for i in (0, 1)]
    contexts = [list(r["context"] or []) for r in rows for _ in (0, 1)]
    return prompts, responses, contexts


def _pool(model: Any, scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(B,)`` end scores from ``(B, L)`` per-position scores, as the model is configured."""
    mask = mask.to(scores.dtype)
    pooling = model.config.pooling
    if pooling == "mean":
        return (scores * mask).sum(-1) / mask.sum(-1).clamp_min(1.0)
    if pooling == "cls":
        return scores[:, 0]
    last = (mask * torch.arange(mask.shape[-1])).argmax(-1)
    return scores.gather(1, last[:, None]).squeeze(1)


@torch.no_grad()
def _plain(model: Any, prompts: list[str], responses: list[str], contexts: list) -> torch.Tensor:
    """The plain loop: encode, collate, forward, head, pool, in input order."""
    out = []
    for start in range(0, len(prompts), BATCH):
        part = slice(start, start + BATCH)
        texts = zip(prompts[part], responses[part], contexts[part])
        items = [model.encode(p, r, c) for p, r, c in texts]
        batch = model.collate(items)
        hidden = model.backbone(**batch).last_hidden_state
        out.append(_pool(model, model.head(hidden).squeeze(-1), batch["attention_mask"]))
    return torch.cat(out).float()


def scoring(bench: Bench) -> CaseResult:
    """Texts per second of our TextScorer against the plain loop on the same model."""
    from constrained_align.scoring import ScoreModel, TextScorer

    model = ScoreModel.from_backbone(bench.settings.scorer_backbone, "cost", max_length=256).eval()
    scorer = TextScorer(model, batch_size=BATCH, progress=False)
    prompts, responses, contexts = _texts()
    repeats = bench.settings.repeats
    ours_s, ours_out = time_calls(lambda: scorer.score(prompts, responses, contexts), repeats)
    model.eval()
    peer_s, peer_out = time_calls(lambda: _plain(model, prompts, responses, contexts), repeats)
    diff = close(ours_out[0], peer_out[0])
    items = [model.encode(p, r, c) for p, r, c in zip(prompts, responses, contexts)]
    tokens = sum(len(item.input_ids) for item in items)
    passes = -(-TEXTS // BATCH)
    gemms = forward_gemms(model_dims(model.backbone), tokens / passes, passes)
    bound = bench.meter.bound(gemms, TEXTS)
    ours, peer = TEXTS / median(ours_s), TEXTS / median(peer_s)
    return CaseResult(
        name="scoring",
        ours=ours,
        peer=peer,
        unit="texts/s",
        higher_is_better=True,
        share_ours=bound_share(ours, bound, True),
        share_peer=bound_share(peer, bound, True),
        details={
            "backbone": bench.settings.scorer_backbone,
            "texts": TEXTS,
            "batch_size": BATCH,
            "real_tokens": tokens,
            "bound_texts_per_s": bound,
            "flop_per_text": sum(g.flops for g in gemms) / TEXTS,
            "score_max_abs_diff": diff,
        },
        checks={"scores_within_1e-5": diff <= TOLERANCE},
    )
