"""Batched ancestral sampling from a causal LM with the KV cache.

Prompts come left-padded, so every row's next token sits at the last column. Position ids
follow each row's attention mask (the first real token is position 0), which is what the model
saw in training and what the log-prob pass uses, so a sampled response scores the same under
:func:`~constrained_align.backends.causal_lm.logprobs.token_logprobs` as it did while being drawn.

The random draws come from an explicit ``torch.Generator``: the same seed gives the same
responses whatever else used the global RNG in between.
"""

from __future__ import annotations

import torch
from torch import Tensor

from constrained_align.backends.causal_lm.sequences import SamplingSettings, pad_rows
from constrained_align.types import TrainingError


def next_token(logits: Tensor, settings: SamplingSettings, generator: torch.Generator) -> Tensor:
    """``(B,)`` tokens drawn from ``(B, V)`` logits with temperature and top-p.

    Raises:
        TrainingError: the logits are not finite (the weights diverged).
    """
    if not bool(torch.isfinite(logits).all()):
        raise TrainingError("the model's next-token logits are not finite: its weights diverged")
    if settings.temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / settings.temperature, dim=-1)
    if settings.top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        # Keep the smallest prefix whose mass reaches top_p (the first token always stays).
        drop = sorted_p.cumsum(-1) - sorted_p >= settings.top_p
        drop[..., 0] = False
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    draw = torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(-1)
    return draw.to(logits.device)


@torch.no_grad()
def sample_responses(
    model: torch.nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    *,
    settings: SamplingSettings,
    eos_ids: list[int],
    pad_id: int,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """Draw one response per row.

    Args:
        model: a causal LM (``forward(input_ids, attention_mask, position_ids, past_key_values,
            use_cache)`` returning ``logits`` and ``past_key_values``).
        input_ids: ``(B, P)`` left-padded prompts.
        attention_mask: ``(B, P)`` 1 on prompt tokens.
        settings: temperature, top-p and length.
        eos_ids: tokens that end a response (kept as its last token).
        pad_id: filler after a row has ended.
        generator: source of the random draws.

    Returns:
        ``(B, T)`` response ids (pad after EOS) and ``(B, T)`` float mask, 1 on response tokens
        (EOS included).
    """
    batch = input_ids.shape[0]
    device = input_ids.device
    eos = torch.tensor(eos_ids, device=device)
    mask = attention_mask.clone()
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    step_ids, past = input_ids, None
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    tokens, live = [], []
    for _ in range(settings.max_new_tokens):
        out = model(
            input_ids=step_ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=past,
            use_cache=True,
        )
        past = out.past_key_values
        token = next_token(out.logits[:, -1], settings, generator)
        token = torch.where(done, torch.full_like(token, pad_id), token)
        tokens.append(token)
        live.append(~done)
        done = done | torch.isin(token, eos)
        if bool(done.all()):
            break
        step_ids = token.unsqueeze(-1)
        mask = torch.cat([mask, mask.new_ones(batch, 1)], dim=-1)
        positions = positions[:, -1:] + 1
    return torch.stack(tokens, dim=1), torch.stack(live, dim=1).float()


def generate_batches(
    model: torch.nn.Module,
    prompt_ids: list[list[int]],
    *,
    settings: SamplingSettings,
    batch_size: int,
    eos_ids: list[int],
    pad_id: int,
    generator: torch.Generator,
) -> list[list[int]]:
    """One response (token ids, EOS included when drawn) per prompt, ``batch_size`` prompts
    per left-padded batch, all draws from ``generator``."""
    device = next(model.parameters()).device
    responses: list[list[int]] = []
    for start in range(0, len(prompt_ids), batch_size):
        rows = prompt_ids[start : start + batch_size]
        ids = pad_rows(rows, pad_id, left=True)
        lengths = torch.tensor([len(r) for r in rows])
        mask = (torch.arange(ids.shape[1]) >= ids.shape[1] - lengths[:, None]).long()
        out, live = sample_responses(
            model,
            ids.to(device),
            mask.to(device),
            settings=settings,
            eos_ids=eos_ids,
            pad_id=pad_id,
            generator=generator,
        )
        for tokens, keep in zip(out.cpu(), live.cpu().bool()):
            responses.append(tokens[keep].tolist())
    return responses
