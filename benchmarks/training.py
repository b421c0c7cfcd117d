"""``dpo_step`` (our offline DPO optimizer step against stock ``trl.DPOTrainer``) and
``reference_pass`` (our reference log-probs against a plain full-logits loop).

Both run on the same :data:`~benchmarks.common.NUM_PAIRS` pairs of the embedded train data,
chosen so that neither side truncates (:func:`~benchmarks.common.select_pairs`).

**dpo_step.** Ours: the policy from the library's builder, the pair batches of its task, the
DPO loss the algorithms use (``dpo_on_labels``), ``policy.step``; the reference log-probs are
computed (and cached in each batch) before anything is timed. TRL: ``DPOTrainer`` on a deep copy
of the same base weights with the same LoRA initialisation, ``precompute_ref_log_probs=True``,
the pairs in our batch order (sequential sampler), constant lr, no gradient checkpointing (we
do not checkpoint the decoder either). Only optimizer steps are timed (TRL: a callback's
``on_step_begin``/``on_step_end``); step 0 is the warm-up, then each repeat is one pass over
the 8 batches (every pair once): real tokens of both sequences of each pair, prompt included,
per second of optimizer steps.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from benchmarks.common import (
    SEED,
    Bench,
    CaseResult,
    bound_share,
    close,
    median,
    time_calls,
)
from benchmarks.flops import (
    logprob_gemms,
    lora_train_gemms,
    model_dims,
)

BETA = 0.1
LOSS_TOLERANCE = 1e-4
LOGPROB_TOLERANCE = 1e-4


def _batch_tokens(batch: Any) -> tuple[int, int]:
    """Real tokens (both sequences, prompt included) and response tokens of a pair batch."""
    seqs = (batch.response_0, batch.response_1)
    return (
        int(sum(s.attention_mask.sum() for s in seqs)),
        int(sum(s.response_mask.sum() for s in seqs)),
    )


def _ours_dpo(bench: Bench, repeats: int) -> dict[str, Any]:
    """Our DPO steps (a warm-up step, then ``repeats`` passes over the batches): per-step
    seconds, tokens and losses, and the batches they ran on."""
    from constrained_align.algorithms import RunContext
    from constrained_align.algorithms.pairs import dpo_on_labels, logratios
    from constrained_align.runner.build import build_task

    config = bench.lm_config()
    policy = bench.policy()
    task = build_task(config, policy)
    ctx = RunContext(backend=policy, scorer=None, task=task)
    batches = [b.with_extra(label=b.better_id) for b in task.pair_batches(0)]
    with torch.no_grad():
        for batch in batches:
            logratios(ctx, batch)  # the reference log-probs, cached in batch.extra
    loss_fn = dpo_on_labels(ctx, beta=BETA)
    seconds, tokens, losses = [], [], []
    for step in range(1 + len(batches) * repeats):
        batch = batches[step % len(batches)]
        started = time.perf_counter()
        losses.append(policy.step(lambda batch=batch: loss_fn(batch)[0]))
        seconds.append(time.perf_counter() - started)
        tokens.append(_batch_tokens(batch)[0])
    return {"seconds": seconds, "tokens": tokens, "losses": losses, "batches": batches}


def _trl_rows(bench: Bench, batches: list[Any]) -> list[dict[str, str]]:
    """The pairs of ``batches``, in order, as TRL's prompt/chosen/rejected text: the templated
    prompt and the replies as our encoder reads them after it (TRL appends the EOS)."""
    from constrained_align.data.chat import render_prompt, reply_text

    rows = []
    for batch in batches:
        r0, r1 = batch.response_0, batch.response_1
        for i in range(len(batch)):
            text = render_prompt(bench.tokenizer, r0.prompts[i], r0.contexts[i])
            replies = [reply_text(text, r0.responses[i]), reply_text(text, r1.responses[i])]
            better = int(batch.better_id[i])
            chosen, rejected = replies[better], replies[1 - better]
            rows.append({"prompt": text, "chosen": chosen, "rejected": rejected})
    return rows


def _trl_trainer(bench: Bench, rows: list[dict[str, str]], steps: int) -> tuple[Any, list[dict]]:
    """Stock ``DPOTrainer`` over ``rows`` and the records its timing callback fills."""
    from datasets import Dataset
    from peft import get_peft_model
    from transformers import PrinterCallback, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from constrained_align.runner.build import lora_config

    m = bench.lm_config().model
    model, tokenizer = bench.base_model()
    torch.manual_seed(SEED)  # the same LoRA A matrices as the library's builder draws
    model = get_peft_model(model, lora_config(m))
    records: list[dict[str, Any]] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            records.append({"tokens": 0, "loss": None, "started": time.perf_counter()})

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            records[-1]["seconds"] = time.perf_counter() - records[-1]["started"]

    args = DPOConfig(
        output_dir=str(bench.settings.workdir / "trl"),
        per_device_train_batch_size=4,
        learning_rate=1e-4,
        lr_scheduler_type="constant",
        weight_decay=0.0,
        max_grad_norm=1.0,
        beta=BETA,
        max_steps=steps,
        precompute_ref_log_probs=True,
        max_length=None,
        gradient_checkpointing=False,
        train_sampling_strategy="sequential",
        use_cpu=True,
        bf16=False,
        report_to=[],
        dataloader_pin_memory=False,
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        seed=SEED,
    )
    trainer = DPOTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        callbacks=[StepTimer()],
    )
    trainer.remove_callback(PrinterCallback)  # it prints the final metrics dict
    compute_loss = trainer.compute_loss

    def counting(model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        out = compute_loss(model, inputs, *args, **kwargs)
        records[-1]["tokens"] += int(inputs["attention_mask"].sum())
        records[-1]["loss"] = float((out[0] if isinstance(out, tuple) else out).detach())
        return out

    trainer.compute_loss = counting
    return trainer, records


def _same_tokens(trainer: Any, batches: list[Any]) -> bool:
    """Whether TRL's tokenized pairs are our token sequences, pair by pair."""
    data = trainer.train_dataset
    j = 0
    for batch in batches:
        sides = (batch.response_0, batch.response_1)
        for i in range(len(batch)):
            better = int(batch.better_id[i])
            ours = [s.input_ids[i][s.attention_mask[i].bool()].tolist() for s in sides]
            prompt = list(data[j]["prompt_ids"])
            if prompt + list(data[j]["chosen_ids"]) != ours[better]:
                return False
            if prompt + list(data[j]["rejected_ids"]) != ours[1 - better]:
                return False
            j += 1
    return True


def _reference_diff(batches: list[Any], dataset: Any) -> float | None:
    """Largest difference between our cached reference log-probs of the chosen responses and
    the ones TRL precomputed (a detail: both sum ~50 fp32 token log-probs); None when the
    batches no longer cache them under ``ref_logp_0``/``ref_logp_1``."""
    if any("ref_logp_0" not in b.extra or "ref_logp_1" not in b.extra for b in batches):
        return None
    pairs = [torch.stack([b.extra["ref_logp_0"], b.extra["ref_logp_1"]]) for b in batches]
    ours = torch.cat(pairs, 1)
    better = torch.cat([b.better_id for b in batches]).long()
    theirs = torch.tensor(dataset["ref_chosen_logps"], dtype=torch.float64)
    return close(ours.gather(0, better[None]).squeeze(0), theirs)


def _per_repeat(seconds: list[float], tokens: list[int], per: int, repeats: int) -> list[float]:
    """Tokens per second of each repeat of ``per`` steps after the warm-up step."""
    return [
        sum(tokens[1 + r * per : 1 + (r + 1) * per]) / sum(seconds[1 + r * per : 1 + (r + 1) * per])
        for r in range(repeats)
    ]


def dpo_step(bench: Bench) -> CaseResult:
    """Training tokens per second of our DPO optimizer step against stock TRL's."""
    repeats = bench.settings.repeats
    ours = _ours_dpo(bench, repeats)
    per = len(ours["batches"])
    trainer, records = _trl_trainer(bench, _trl_rows(bench, ours["batches"]), 1 + per * repeats)
    same_tokens = _same_tokens(trainer, ours["batches"])
    ref = trainer.train_dataset
    trainer.train()
    trl_seconds = [r["seconds"] for r in records]
    trl_tokens = [r["tokens"] for r in records]
    ours_rate = median(_per_repeat(ours["seconds"], ours["tokens"], per, repeats))
    trl_rate = median(_per_repeat(trl_seconds, trl_tokens, per, repeats))
    loss_diff = abs(ours["losses"][0] - records[0]["loss"])
    losses = list(zip(ours["losses"], (r["loss"] for r in records)))
    # The bound: one LoRA forward+backward over each step's real tokens (M = tokens per step).
    batches = ours["batches"]
    tokens = sum(_batch_tokens(b)[0] for b in batches)
    scored = sum(_batch_tokens(b)[1] for b in batches)
    dims = model_dims(trainer.model)
    gemms = lora_train_gemms(dims, tokens / per, scored / per, per)
    bound = bench.meter.bound(gemms, tokens)
    ref_diff = _reference_diff(batches, ref)
    return CaseResult(
        name="dpo_step",
        ours=ours_rate,
        peer=trl_rate,
        unit="tokens/s",
        higher_is_better=True,
        share_ours=bound_share(ours_rate, bound, True),
        share_peer=bound_share(trl_rate, bound, True),
        details={
            "bound_tokens_per_s": bound,
            "flop_per_token": sum(g.flops for g in gemms) / tokens,
            "n_nonembedding": dims.n_linear,
            "tokens_per_pass": tokens,
            "steps_per_repeat": per,
            "first_batch_loss_ours": ours["losses"][0],
            "first_batch_loss_trl": records[0]["loss"],
            "first_batch_loss_abs_diff": loss_diff,
            "max_step_loss_abs_diff": max(abs(a - b) for a, b in losses),
            "ref_logp_chosen_max_abs_diff": ref_diff,
            "trl_tokens_per_pass": sum(trl_tokens[1 : 1 + per]),
            "trl_gradient_checkpointing": False,
        },
        checks={
            "first_batch_loss_within_1e-4": loss_diff <= LOSS_TOLERANCE,
            "same_token_sequences": same_tokens,
            "same_tokens_counted": sum(trl_tokens[1 : 1 + per]) == tokens,
        },
    )


# ---------------------------------------------------------------------------------- reference


def _pair_sequences(bench: Bench, policy: Any) -> tuple[Any, Any]:
    """Both responses of every pair, tokenized by ``policy`` (right-padded, pair order)."""
    from constrained_align.backends.causal_lm import PromptBatch

    rows = bench.pairs
    prompts = PromptBatch([r["prompt"] for r in rows], [list(r["context"] or []) for r in rows])
    return tuple(policy.encode(prompts, [r[f"response_{i}"] for r in rows]) for i in (0, 1))


def _response_rows(token: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
    """Rows of ``(B, T)`` response-coordinate values, each cut to its real tokens."""
    return [token[i][mask[i].bool()] for i in range(len(token))]


def _ours_reference(policy: Any, seqs: tuple[Any, Any]) -> list[torch.Tensor]:
    """Our reference log-probs of both sides (``pair_logprobs`` when the backend has it), the
    cache emptied first so that every call computes them."""
    cache = getattr(policy, "_ref_cache", None)
    if cache is not None:
        cache.clear()
    pair = getattr(policy, "pair_logprobs", None)
    if pair is not None:
        sides = pair(seqs[0], seqs[1], reference=True)
    else:
        sides = [policy.logprobs(s, reference=True) for s in seqs]
    return [row for lp in sides for row in _response_rows(lp.token, lp.mask)]


@torch.no_grad()
def _plain_reference(model: Any, seqs: tuple[Any, Any], size: int) -> list[torch.Tensor]:
    """The plain loop: adapters off, full logits, log-softmax, gather at the response tokens,
    ``size`` sequences per forward (each batch cut to its longest row)."""
    rows = []
    with model.disable_adapter():
        for side in seqs:
            for start in range(0, len(side), size):
                part = slice(start, start + size)
                width = int(side.attention_mask[part].sum(1).max())
                ids = side.input_ids[part, :width]
                mask = side.attention_mask[part, :width]
                response = side.response_mask[part, :width]
                logits = model(input_ids=ids, attention_mask=mask).logits
                logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
                picked = logp.gather(-1, ids[:, 1:, None]).squeeze(-1)
                rows.extend(picked[i][response[i, 1:].bool()] for i in range(len(ids)))
    return rows


def reference_pass(bench: Bench) -> CaseResult:
    """Reference log-prob tokens per second: ours against the plain full-logits loop."""
    policy = bench.policy()
    seqs = _pair_sequences(bench, policy)
    size = policy.settings.inference_batch_size
    repeats = bench.settings.repeats
    ours_s, ours_out = time_calls(lambda: _ours_reference(policy, seqs), repeats)
    model = policy.weights.model
    peer_s, peer_out = time_calls(lambda: _plain_reference(model, seqs, size), repeats)
    diff = max(close(a, b) for a, b in zip(ours_out[0], peer_out[0]))
    same_lengths = [len(r) for r in ours_out[0]] == [len(r) for r in peer_out[0]]
    tokens = int(sum(s.attention_mask.sum() for s in seqs))
    scored = int(sum(s.response_mask.sum() for s in seqs))
    # The bound: a forward over the real tokens, the head on the response positions only.
    passes = sum(-(-len(s) // size) for s in seqs)
    dims = model_dims(model)
    gemms = logprob_gemms(dims, tokens / passes, scored / passes, passes)
    bound = bench.meter.bound(gemms, tokens)
    ours, peer = tokens / median(ours_s), tokens / median(peer_s)
    return CaseResult(
        name="reference_pass",
        ours=ours,
        peer=peer,
        unit="tokens/s",
        higher_is_better=True,
        share_ours=bound_share(ours, bound, True),
        share_peer=bound_share(peer, bound, True),
        details={
            "bound_tokens_per_s": bound,
            "flop_per_token": sum(g.flops for g in gemms) / tokens,
            "sequences": sum(len(s) for s in seqs),
            "tokens": tokens,
            "response_tokens": scored,
            "batch_size": size,
            "used_pair_logprobs": hasattr(policy, "pair_logprobs"),
            "logprob_max_abs_diff": diff,
        },
        checks={
            "logprobs_within_1e-4": same_lengths and diff <= LOGPROB_TOLERANCE,
        },
    )
