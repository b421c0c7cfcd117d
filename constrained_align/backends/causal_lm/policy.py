"""The causal-LM policy backend: the same interface as the tabular testbed, on transformers.

:class:`CausalLMPolicy` implements :class:`~constrained_align.types.PolicyBackend` over any
``AutoModelForCausalLM``:

- ``sample``: the KV cache (:mod:`.sampling`), batches of left-padded prompts, a seeded generator;
- ``logprobs``: the decoder once, then only the response positions through the LM head in
  chunks (:mod:`.logprobs`), so the (B, T, V) logits never exist at once;
- the reference: the adapter-free base under LoRA, or a frozen copy (:mod:`.weights`); its
  log-probs are computed once per batch of sequences and kept;
- ``add_critic`` / ``values``: critics as further adapters on the shared base (:mod:`.critics`);
- ``step``: one optimizer step through accelerate's engine (:mod:`.engine`): micro-batches,
  mixed precision, the engine's gradient all-reduce, clipping;
- ``state_dict``: weights, optimizer, sampling generator and step count.

That is all it does: caching samples on disk, counting steps on a resume and progress bars are
the runner's (:mod:`constrained_align.runner.replay`). Dropout stays off: the policy equals the
reference at step 0, so the DPO log-ratio starts at exactly zero.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from constrained_align.backends.causal_lm.critics import Critics
from constrained_align.backends.causal_lm.engine import Engine
from constrained_align.backends.causal_lm.forward import response_readout
from constrained_align.backends.causal_lm.identity import (
    check_plain_logits,
    end_of_turn_ids,
    tokenizer_fingerprint,
    weights_fingerprint,
)
from constrained_align.backends.causal_lm.logprobs import gathered_logprobs
from constrained_align.backends.causal_lm.micro_batches import micro_batches
from constrained_align.backends.causal_lm.sampling import generate_batches
from constrained_align.backends.causal_lm.sequences import (
    LMSequences,
    LMSettings,
    PromptBatch,
    SamplingSettings,
    make_sequences,
    prompt_token_ids,
    response_token_ids,
    unwrap,
)
from constrained_align.backends.causal_lm.weights import FullWeights, LoraWeights, check_weights
from constrained_align.config import LM_CRITIC_LR, LM_LR, OptimConfig
from constrained_align.types import LogProbs, Samples, check_finite
from constrained_align.utils.cache import content_key
from constrained_align.utils.distributed import Reductions


def lm_samples(sequences: LMSequences, num_prompts: int, num_samples: int) -> Samples:
    """``num_samples`` prompt-major responses per prompt as :class:`Samples` (weight 1 each)."""
    group = torch.arange(num_prompts).repeat_interleave(num_samples)
    return Samples(sequences=sequences, group=group, weight=torch.ones(len(group)))


class CausalLMPolicy:
    """A causal LM as a :class:`~constrained_align.types.PolicyBackend`.

    Args:
        weights: :class:`LoraWeights` or :class:`FullWeights` around the model.
        tokenizer: the model's tokenizer, with a chat template and an EOS token.
        settings: lengths, batching and sampling.
        optim: optimizer settings (``adam``, ``adamw`` or ``sgd``; ``lr``, ``weight_decay``,
            ``max_grad_norm``, ``critic_lr``; null rates take the LM defaults).
        seed: seed of the sampling generator.
        reductions: cross-process reductions (identities in one process): ``step`` weighs
            each process's rows by their share of the whole batch with them.
        engine: accelerate's engine of the optimizer steps (:mod:`.engine`); None makes one
            with fp32 and no gradient accumulation.
    """

    def __init__(
        self,
        weights: LoraWeights | FullWeights,
        tokenizer: Any,
        *,
        settings: LMSettings | None = None,
        optim: OptimConfig | None = None,
        seed: int = 0,
        reductions: Reductions | None = None,
        engine: Engine | None = None,
    ) -> None:
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no EOS token; responses could never end")
        check_plain_logits(weights.model.config)
        self.weights = weights
        self.tokenizer = tokenizer
        self.settings = settings or LMSettings()
        optim = optim or OptimConfig(name="adamw")
        self.optim_config = optim.resolved(lr=LM_LR, critic_lr=LM_CRITIC_LR)
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        self.reductions = reductions or Reductions()
        self.engine = engine or Engine()
        self.steps = 0
        self.forks = 0
        self._reference_fp: str | None = None
        self._tokenizer_fp: str | None = None
        self._ref_cache: dict[str, LogProbs] = {}
        self.critics = Critics(weights)
        self.optimizer = self._make_optimizer()
        self.eos_ids = end_of_turn_ids(tokenizer, weights.model)

    @property
    def device(self) -> torch.device:
        return next(self.weights.model.parameters()).device

    @property
    def pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return int(self.tokenizer.eos_token_id if pad is None else pad)

    def _make_optimizer(self) -> torch.optim.Optimizer:
        """One group for the policy, one per critic (at ``critic_lr``)."""
        cfg = self.optim_config
        groups = [{"params": self.weights.trainable(), "lr": cfg.lr}]
        groups += [self._critic_group(head) for head in self.critics.heads]
        kind = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}.get(cfg.name, torch.optim.AdamW)
        return kind(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)

    def _critic_group(self, head: str) -> dict[str, Any]:
        return {"params": self.critics.add(head), "lr": self.optim_config.critic_lr}

    def trainable(self) -> list[torch.nn.Parameter]:
        """Every tensor the optimizer updates: the policy's, then each critic's."""
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    # ---------------------------------------------------------------- identity

    def reference_fingerprint(self) -> str:
        """Content hash of the reference weights (computed once; changes on a reference swap)."""
        if self._reference_fp is None:
            self._reference_fp = weights_fingerprint(self.weights)
        return self._reference_fp

    def tokenizer_fingerprint(self) -> str:
        """Content hash of the tokenizer (vocabulary and rules), chat template and EOS."""
        if self._tokenizer_fp is None:
            self._tokenizer_fp = tokenizer_fingerprint(self.tokenizer, self.eos_ids)
        return self._tokenizer_fp

    def policy_fingerprint(self) -> str:
        """Content hash of the current policy: the reference and the trainable weights."""
        return content_key(self.reference_fingerprint(), *self.weights.trainable())

    # ---------------------------------------------------------------- sampling

    def next_seed(self) -> int:
        """A seed for the next sample, drawn from this backend's generator."""
        return int(torch.randint(2**62, (1,), generator=self.generator))

    def encode(self, batch: PromptBatch, responses: Sequence[str]) -> LMSequences:
        """Tokenize dataset responses to ``batch``'s prompts (truncated; EOS when whole)."""
        if len(responses) != len(batch):
            raise ValueError(f"{len(batch)} prompts but {len(responses)} responses")
        rows, starts = [], []
        tok, eos, cfg = self.tokenizer, int(self.tokenizer.eos_token_id), self.settings
        for prompt, context, response in zip(batch.prompts, batch.contexts, responses):
            text, p_ids = prompt_token_ids(tok, prompt, context, cfg.max_prompt_tokens)
            limit = cfg.max_response_tokens
            rows.append(p_ids + response_token_ids(tok, text, response, limit, eos))
            starts.append(len(p_ids))
        return make_sequences(rows, starts, batch, list(responses), pad_id=self.pad_id)

    @torch.no_grad()
    def sample(
        self,
        prompts: PromptBatch,
        num_samples: int,
        *,
        reference: bool = False,
        seed: int | None = None,
        sampling: SamplingSettings | None = None,
        row_ids: Sequence[int] | None = None,
    ) -> Samples:
        """``num_samples`` responses per prompt, prompt-major, weight 1 each.

        Args:
            prompts: the prompts.
            num_samples: responses per prompt.
            reference: sample the reference instead of the policy.
            seed: seed of the draws; None draws one from this backend's generator.
            sampling: temperature, top-p and length; None = the backend's settings.
            row_ids: each response's row in a larger call that was shared out over processes
                (response i draws from ``(seed, row_ids[i])``; default ``i``), so that a
                response does not depend on how the call was shared out.
        """
        seed = self.next_seed() if seed is None else seed
        batch = prompts.repeat(num_samples)
        if row_ids is not None and len(row_ids) != len(batch):
            raise ValueError(f"{len(batch)} responses but {len(row_ids)} row ids")
        prompt_ids = [
            prompt_token_ids(self.tokenizer, p, c, self.settings.max_prompt_tokens)[1]
            for p, c in zip(batch.prompts, batch.contexts)
        ]
        context = self.weights.reference_model if reference else self.weights.policy_model
        with context() as model:
            responses = generate_batches(
                model,
                prompt_ids,
                settings=sampling or self.settings.sampling,
                batch_size=self.settings.inference_batch_size,
                eos_ids=self.eos_ids,
                pad_id=self.pad_id,
                seed=seed,
                fast=self.settings.fast_paths,
                row_ids=row_ids,
            )
        texts = [self.tokenizer.decode(r, skip_special_tokens=True).strip() for r in responses]
        rows = [p + r for p, r in zip(prompt_ids, responses)]
        starts = [len(p) for p in prompt_ids]
        seqs = make_sequences(rows, starts, batch, texts, pad_id=self.pad_id)
        return lm_samples(seqs, len(prompts), num_samples)

    # ---------------------------------------------------------------- log-probs and values

    def _token_logprobs(self, model: torch.nn.Module, sequences: LMSequences) -> Tensor:
        """``(B, T)`` log-probs of the response tokens under ``model`` (see :mod:`.forward`)."""
        head, chunk = unwrap(model).get_output_embeddings(), self.settings.chunk_size

        def readout(states: Tensor, targets: Tensor) -> Tensor:
            return gathered_logprobs(states, targets, head, chunk_size=chunk)

        return response_readout(model, sequences, self.settings, self.device, readout)

    def logprobs(self, sequences: LMSequences, *, reference: bool = False) -> LogProbs:
        """Token log-probs of the responses in response coordinates: ``(B, T)`` with column t
        the t-th response token and a prefix mask (what GAE and the PPO losses expect).
        Differentiable unless ``reference``.

        Reference log-probs are computed once per distinct batch of sequences (without autograd
        at all) and kept until the reference changes.
        """
        _, keep = sequences.response_index()
        if reference:
            key = sequences.key()
            if key not in self._ref_cache:
                with torch.inference_mode(), self.weights.reference_model() as model:
                    token = self._token_logprobs(model, sequences).cpu()
                token = token.clone()  # an ordinary tensor again, usable beside autograd
                check_finite(token, "the reference log-probs", self.steps)
                self._ref_cache[key] = LogProbs(token=token, mask=keep)
            return self._ref_cache[key]
        with self.weights.policy_model() as model:
            token = self._token_logprobs(model, sequences).cpu()
        check_finite(token.detach(), "the policy's log-probs", self.steps)
        return LogProbs(token=token, mask=keep)

    def pair_logprobs(
        self, response_0: LMSequences, response_1: LMSequences, *, reference: bool = False
    ) -> tuple[LogProbs, LogProbs]:
        """:meth:`logprobs` of both responses of preference pairs, in one pass: on the fast
        path their shared prompts are computed once (:mod:`.packing`)."""
        if not self.settings.fast_paths:
            return self.logprobs(response_0, reference=reference), self.logprobs(
                response_1, reference=reference
            )
        both = self.logprobs(LMSequences.concat([response_0, response_1]), reference=reference)
        n, t0, t1 = len(response_0), response_0.response_width(), response_1.response_width()
        first = LogProbs(token=both.token[:n, :t0], mask=both.mask[:n, :t0])
        return first, LogProbs(token=both.token[n:, :t1], mask=both.mask[n:, :t1])

    def add_critic(self, head: str) -> None:
        """Make critic ``head`` (an adapter on the shared base, or a trainable copy, with a
        zero value head; see :mod:`.critics`) and add it to the optimizer at ``critic_lr``."""
        if head not in self.critics.heads:
            self.optimizer.add_param_group(self._critic_group(head))

    def values(self, sequences: LMSequences, head: str) -> Tensor:
        """``(B, T)`` V(s_t) of critic ``head`` at each response token, in response coordinates
        like :meth:`logprobs` (differentiable)."""
        if head not in self.critics.heads:
            raise KeyError(f"no critic {head!r}: call add_critic({head!r}) first")
        with self.weights.critic_model(head) as model:
            readout = self.critics.readout(head)
            return response_readout(model, sequences, self.settings, self.device, readout).cpu()

    # ---------------------------------------------------------------- training and state

    def step(self, closure: Callable[..., Tensor], weight: Tensor | None = None) -> float:
        """One optimizer step on this process's rows of a batch; returns the whole batch's
        loss (every process's rows).

        Args:
            closure: with ``weight``, ``closure(rows)`` is the loss over the batch rows
                ``rows`` (None: all of them), a weighted mean within them; without,
                ``closure()`` is this process's loss, and the processes count equally.
            weight: ``(B,)`` weights of this process's rows.

        The rows are split into the engine's ``gradient_accumulation_steps`` micro-batches and
        each micro-batch's loss is weighted by its share of the batch's weight over every
        process, so the step is the same whatever the number of processes and micro-batches
        (:mod:`.engine`: the engine all-reduces and averages the gradients).
        """
        step, engine = self.steps + 1, self.engine
        params = self.trainable()
        module = engine.wrap([self.weights.model, *self.critics.modules()], params)
        optimizer = engine.optimizer(self.optimizer)
        parts = micro_batches(closure, weight, engine.accumulation, self.reductions)
        loss_sum = 0.0
        for (part, share), context in zip(parts, engine.micro_steps(module)):
            with context:
                with engine.autocast():
                    loss = module(part)
                check_finite(loss.detach(), "the loss", step)
                engine.backward(loss * (share * engine.world_size * engine.accumulation))
            loss_sum += float(loss.detach()) * share
        norm = engine.clip(params, self.optim_config.max_grad_norm)
        if not engine.loss_scaled:  # fp16's scaler skips a step with inf gradients itself
            check_finite(norm, "the gradient norm", step)
        engine.step(optimizer)
        check_weights(params, step)
        self.steps = step
        return float(self.reductions.gather(torch.tensor([loss_sum])).sum())

    def fork(self) -> CausalLMPolicy:
        """A new policy at the reference that shares this backend's reference weights."""
        self.forks += 1
        child = CausalLMPolicy(
            self.weights.fork(),
            self.tokenizer,
            settings=self.settings,
            optim=self.optim_config,
            seed=self.seed + self.forks,
            reductions=self.reductions,
            engine=self.engine,
        )
        child._reference_fp = self._reference_fp
        child._tokenizer_fp = self._tokenizer_fp
        return child

    def set_reference_to_policy(self) -> None:
        """Freeze the current policy as the reference (SACPO stage 2); training continues."""
        self.weights.swap_reference()
        self._reference_fp = content_key("swapped", self.reference_fingerprint(), self.steps)
        self._ref_cache.clear()
        self.optimizer = self._make_optimizer()

    def state_dict(self) -> dict[str, Any]:
        """Weights, optimizer, sampling generator and step count."""
        return {
            "weights": self.weights.state_dict(),
            # A copy: the live Adam moments would keep changing inside a kept state.
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "generator": self.generator.get_state(),
            "steps": self.steps,
            "reference_fp": self._reference_fp,
            "critics": self.critics.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any], *, generator: bool = True) -> None:
        """Restore :meth:`state_dict` (the sampling generator too, unless ``generator`` is
        False)."""
        self.critics.load_state_dict(state.get("critics", {}))  # makes missing critics first
        self.weights.load_state_dict(state["weights"])
        self.optimizer = self._make_optimizer()
        self.optimizer.load_state_dict(state["optimizer"])
        if generator:
            self.generator.set_state(state["generator"])
        self.steps = int(state["steps"])
        if state.get("reference_fp") != self._reference_fp:
            self._ref_cache.clear()
        self._reference_fp = state.get("reference_fp")

    def save_pretrained(self, folder: str) -> None:
        """Final weights: the LoRA adapter (peft format) or the full model (safetensors)."""
        self.weights.save(folder)
        self.tokenizer.save_pretrained(folder)
