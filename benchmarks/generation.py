"""``generation_b16`` and ``generation_b64``: our sampler against transformers' ``generate``.

Same model (the policy's LoRA model, adapters on, as our sampler uses it), same prompts (the
first 16 or 64 embedded train prompts whose templated form fits the prompt budget), one
left-padded batch, temperature 1, top-p 1, 48 new tokens, stopping at the policy's end-of-turn
tokens. ``generate`` gets ``top_k=0``: its default top-k of 50 would sample another
distribution than ours (ours keeps every token at top-p 1). Unit: new tokens (generated,
EOS included, padding after it not) per second. Both sides are seeded, so every repeat draws
the same tokens.
"""

from __future__ import annotations

import torch

from benchmarks.common import (
    Bench,
    CaseResult,
    bound_share,
    median,
    time_calls,
    token_ids,
)
from benchmarks.flops import (
    decode_gemms,
    model_dims,
)

NEW_TOKENS = 48


def _left_padded(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, P)`` left-padded ids and their attention mask."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(row)
        mask[i, width - len(row) :] = 1
    return ids, mask


def _new_tokens(out: torch.Tensor, eos_ids: list[int]) -> int:
    """Generated tokens of ``(B, N)`` continuations: up to and with each row's first EOS."""
    ended = torch.isin(out, torch.tensor(eos_ids))
    first = torch.where(ended.any(1), ended.float().argmax(1) + 1, out.shape[1])
    return int(first.sum())


def generation(bench: Bench, batch_size: int) -> CaseResult:
    """New tokens per second of ``batch_size`` samples in one batch, ours and ``generate``."""
    from constrained_align.backends.causal_lm import SamplingSettings
    from constrained_align.data.chat import render_prompt

    policy = bench.policy()
    policy.settings.inference_batch_size = batch_size
    prompts = bench.prompts(batch_size)
    sampling = SamplingSettings(NEW_TOKENS, 1.0, 1.0)

    def ours() -> int:
        samples = policy.sample(prompts, 1, seed=0, sampling=sampling)
        return int(samples.sequences.response_mask.sum())

    tok = policy.tokenizer
    texts = [render_prompt(tok, p, c) for p, c in zip(prompts.prompts, prompts.contexts)]
    rows = [token_ids(tok, text) for text in texts]
    ids, mask = _left_padded(rows, policy.pad_id)
    model = policy.weights.model

    def peer() -> int:
        torch.manual_seed(0)
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=True,
            temperature=1.0,
            top_p=1.0,
            top_k=0,
            max_new_tokens=NEW_TOKENS,
            pad_token_id=policy.pad_id,
            eos_token_id=list(policy.eos_ids),
        )
        return _new_tokens(out[:, ids.shape[1] :], list(policy.eos_ids))

    repeats = bench.settings.repeats
    ours_s, ours_n = time_calls(ours, repeats)
    peer_s, peer_n = time_calls(peer, repeats)
    ours_rate = median(n / s for n, s in zip(ours_n, ours_s))
    peer_rate = median(n / s for n, s in zip(peer_n, peer_s))
    dims, prompt_tokens = model_dims(model), int(mask.sum())
    bounds = {
        side: bench.meter.bound(decode_gemms(dims, batch_size, prompt_tokens, n, 1), n)
        for side, n in (("ours", ours_n[0]), ("peer", peer_n[0]))
    }
    return CaseResult(
        name=f"generation_b{batch_size}",
        ours=ours_rate,
        peer=peer_rate,
        unit="new tokens/s",
        higher_is_better=True,
        share_ours=bound_share(ours_rate, bounds["ours"], True),
        share_peer=bound_share(peer_rate, bounds["peer"], True),
        details={
            "batch_size": batch_size,
            "prompt_tokens": prompt_tokens,
            "new_tokens_ours": ours_n[0],
            "new_tokens_peer": peer_n[0],
            "bound_new_tokens_per_s_ours": bounds["ours"],
            "bound_new_tokens_per_s_peer": bounds["peer"],
            "decode_flop_per_new_token": 2 * dims.n_linear + 2 * dims.hidden * dims.vocab,
            "prefill_flop_per_prompt_token": 2 * dims.n_linear,
        },
    )


def generation_b16(bench: Bench) -> CaseResult:
    """16 prompts in one batch."""
    return generation(bench, 16)


def generation_b64(bench: Bench) -> CaseResult:
    """64 prompts in one batch."""
    return generation(bench, 64)
