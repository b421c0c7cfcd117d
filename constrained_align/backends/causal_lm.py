"""The causal-LM policy backend: the same interface as the tabular testbed, on transformers.

:class:`CausalLMPolicy` implements :class:`~constrained_align.types.PolicyBackend` over any
``AutoModelForCausalLM``:

- ``sample``: the KV cache (:mod:`.sampling`), batches of left-padded prompts, a seeded generator;
- ``logprobs``: the decoder once, then only the response positions through the LM head in
  chunks (:mod:`.logprobs`), so the (B, T, V) logits never exist at once;
- the reference: the adapter-free base under LoRA, or a frozen copy (:mod:`.weights`); its
  log-probs are computed once per batch of sequences and kept;
- ``step``: one optimizer step, gradients averaged over data-parallel processes, then clipped.

Samples may be cached on disk (:class:`~constrained_align.utils.cache.DiskCache`): reference
samples by the reference weights' fingerprint, prompts, settings and seed; policy samples by
the run's tag and optimizer-step count, so a resumed run replays them. Dropout stays off: the
policy equals the reference at step 0, so the DPO log-ratio starts at exactly zero.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from constrained_align.backends.critics import Critics
from constrained_align.backends.identity import (
    check_plain_logits,
    end_of_turn_ids,
    tokenizer_fingerprint,
    weights_fingerprint,
)
from constrained_align.backends.logprobs import token_logprobs
from constrained_align.backends.sampling import generate_batches
from constrained_align.backends.sequences import (
    LMSequences,
    LMSettings,
    PromptBatch,
    hidden_states,
    in_batches,
    make_sequences,
    prompt_token_ids,
    response_token_ids,
    unwrap,
)
from constrained_align.backends.weights import FullWeights, LoraWeights
from constrained_align.config import OptimConfig
from constrained_align.types import LogProbs, Samples
from constrained_align.utils.cache import DiskCache, content_key
from constrained_align.utils.distributed import Reductions


class CausalLMPolicy:
    """A causal LM as a :class:`~constrained_align.types.PolicyBackend`.

    Args:
        weights: :class:`LoraWeights` or :class:`FullWeights` around the model.
        tokenizer: the model's tokenizer, with a chat template and an EOS token.
        settings: lengths, batching and sampling.
        optim: optimizer settings (``adam``, ``adamw`` or ``sgd``; ``lr``, ``weight_decay``,
            ``max_grad_norm``).
        seed: seed of the sampling generator.
        cache: where samples are cached on disk, or None.
        name: tells forks apart in cache keys and checkpoints.
        reductions: cross-process reductions; ``step`` averages the gradients over the
            data-parallel processes with them (identities in one process).
    """

    def __init__(
        self,
        weights: LoraWeights | FullWeights,
        tokenizer: Any,
        *,
        settings: LMSettings | None = None,
        optim: OptimConfig | None = None,
        seed: int = 0,
        cache: DiskCache | None = None,
        name: str = "policy",
        reductions: Reductions | None = None,
    ) -> None:
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no EOS token; responses could never end")
        check_plain_logits(weights.model.config)
        self.weights = weights
        self.tokenizer = tokenizer
        self.settings = settings or LMSettings()
        self.optim_config = optim or OptimConfig(name="adamw", lr=1e-4)
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        self.cache = cache
        self.name = name
        self.reductions = reductions or Reductions()
        self.steps = 0
        self.run_tag: str | None = None
        self.forks: list[CausalLMPolicy] = []
        self.on_step: Callable[[CausalLMPolicy], None] | None = None
        self._reference_fp: str | None = None
        self._ref_cache: dict[str, LogProbs] = {}
        self.critics = Critics(weights)
        self.optimizer = self._make_optimizer()
        # Seconds spent generating and in optimizer steps, and tokens generated (for metrics).
        self.timers = {"generation": 0.0, "training": 0.0, "generated_tokens": 0.0}
        self.eos_ids = end_of_turn_ids(tokenizer, weights.model)
        self.replay_until = 0
        self._resume_state: dict[str, Any] | None = None
        self._pending: dict[str, dict[str, Any]] = {}

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

    def reference_fingerprint(self) -> str:
        """Content hash of the reference weights (computed once; changes on a reference swap)."""
        if self._reference_fp is None:
            self._reference_fp = weights_fingerprint(self.weights)
        return self._reference_fp

    def tokenizer_fingerprint(self) -> str:
        """Content hash of the tokenizer (vocabulary and rules), chat template and EOS."""
        if getattr(self, "_tokenizer_fp", None) is None:
            self._tokenizer_fp = tokenizer_fingerprint(self.tokenizer, self.eos_ids)
        return self._tokenizer_fp

    def policy_fingerprint(self) -> str:
        """Identity of the current policy weights for the sample cache.

        With a ``run_tag`` (a deterministic trainer run) it is (tag, name, optimizer steps);
        without one it hashes the trainable weights.
        """
        if self.run_tag is not None:
            return content_key(self.run_tag, self.name, self.steps)
        return content_key(self.reference_fingerprint(), *self.weights.trainable())

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

    def sample(
        self,
        prompts: PromptBatch,
        num_samples: int,
        *,
        reference: bool = False,
        seed: int | None = None,
    ) -> Samples:
        """``num_samples`` responses per prompt, prompt-major, weight 1 each."""
        if seed is None:
            seed = int(torch.randint(2**62, (1,), generator=self.generator))
        expanded = PromptBatch(
            [p for p in prompts.prompts for _ in range(num_samples)],
            [c for c in prompts.contexts for _ in range(num_samples)],
        )
        model_fp = self.reference_fingerprint() if reference else self.policy_fingerprint()
        key = content_key(
            "samples",
            model_fp,
            self.tokenizer_fingerprint(),
            self.settings.max_prompt_tokens,
            expanded.prompts,
            expanded.contexts,
            self.settings.sampling,
            seed,
        )
        stored = self.cache.get(key) if self.cache is not None else None
        if stored is None:
            if self.replaying and not reference:
                raise RuntimeError(
                    "cannot resume: the sample cache lacks the on-policy samples the interrupted "
                    "run drew (was the cache folder removed?); start the run again instead"
                )
            started = time.perf_counter()
            stored = self._generate(expanded, reference=reference, seed=seed)
            self.timers["generation"] += time.perf_counter() - started
            self.timers["generated_tokens"] += float(stored["response_mask"].sum())
            if self.cache is not None:
                self.cache.put(key, stored)
        seqs = LMSequences(
            stored["input_ids"],
            stored["attention_mask"],
            stored["response_mask"],
            expanded.prompts,
            expanded.contexts,
            stored["responses"],
        )
        group = torch.arange(len(prompts)).repeat_interleave(num_samples)
        return Samples(sequences=seqs, group=group, weight=torch.ones(len(group)))

    @torch.no_grad()
    def _generate(self, batch: PromptBatch, *, reference: bool, seed: int) -> dict[str, Any]:
        prompt_ids = [
            prompt_token_ids(self.tokenizer, p, c, self.settings.max_prompt_tokens)[1]
            for p, c in zip(batch.prompts, batch.contexts)
        ]
        context = self.weights.reference_model if reference else self.weights.policy_model
        with context() as model:
            responses = generate_batches(
                model,
                prompt_ids,
                settings=self.settings.sampling,
                batch_size=self.settings.inference_batch_size,
                eos_ids=self.eos_ids,
                pad_id=self.pad_id,
                generator=torch.Generator().manual_seed(seed),
            )
        texts = [self.tokenizer.decode(r, skip_special_tokens=True).strip() for r in responses]
        rows = [p + r for p, r in zip(prompt_ids, responses)]
        starts = [len(p) for p in prompt_ids]
        seqs = make_sequences(rows, starts, batch, texts, pad_id=self.pad_id)
        return {
            "input_ids": seqs.input_ids,
            "attention_mask": seqs.attention_mask,
            "response_mask": seqs.response_mask,
            "responses": texts,
        }

    def _forward(self, model: torch.nn.Module, seqs: LMSequences) -> Tensor:
        hidden = hidden_states(model, seqs, self.device)
        response = seqs.response_mask.to(self.device)
        head, chunk = unwrap(model).get_output_embeddings(), self.settings.chunk_size
        return token_logprobs(
            hidden, seqs.input_ids.to(self.device), response, head, chunk_size=chunk
        )

    @torch.no_grad()
    def _batched(self, model: torch.nn.Module, seqs: LMSequences) -> Tensor:
        size = self.settings.inference_batch_size
        return in_batches(lambda part: self._forward(model, part), seqs, size)

    def logprobs(self, sequences: LMSequences, *, reference: bool = False) -> LogProbs:
        """Token log-probs of the responses in response coordinates: ``(B, T)`` with column t
        the t-th response token and a prefix mask (what GAE and the PPO losses expect).
        Differentiable unless ``reference``.

        Reference log-probs are computed once per distinct batch of sequences and kept until
        the reference changes.
        """
        _, keep = sequences.response_index()
        mask = keep.to(self.device)
        if reference:
            key = sequences.key()
            if key not in self._ref_cache:
                with self.weights.reference_model() as model:
                    full = self._batched(model, sequences)
                token = sequences.to_response(full).cpu()
                self._ref_cache[key] = LogProbs(token=token, mask=mask.cpu())
            return self._ref_cache[key]
        with self.weights.policy_model() as model:
            if torch.is_grad_enabled():
                full = self._forward(model, sequences)
            else:
                full = self._batched(model, sequences)
        return LogProbs(token=sequences.to_response(full).cpu(), mask=mask.cpu())

    def values(self, sequences: LMSequences, head: str) -> Tensor:
        """``(B, T)`` V(s_t) of the named critic at each response token, in response coordinates
        like :meth:`logprobs` (see :mod:`.critics`); the critic is made on first use and joins
        the optimizer at ``critic_lr``."""
        if head not in self.critics.heads:
            self.optimizer.add_param_group(self._critic_group(head))
        return sequences.to_response(self.critics.values(sequences, head)).cpu()

    def step(self, closure: Callable[[], Tensor]) -> float:
        """Zero grads, evaluate ``closure``, backward, average over processes, clip, update;
        returns the loss.

        While a resumed run replays the steps its checkpoint already holds, the step is only
        counted (the loss is NaN); at the checkpoint's step the saved state is loaded.
        """
        if self.steps < self.replay_until:
            self.steps += 1
            if self.steps == self.replay_until and self._resume_state is not None:
                self.load_state_dict(self._resume_state)
                self._resume_state = None
            return float("nan")
        started = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        loss = closure()
        loss.backward()
        self.reductions.average_gradients(self.trainable())
        clip = self.optim_config.max_grad_norm
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(self.trainable(), clip)
        self.optimizer.step()
        self.steps += 1
        self.timers["training"] += time.perf_counter() - started
        if self.on_step is not None:
            self.on_step(self)
        return float(loss.detach())

    def fork(self) -> CausalLMPolicy:
        """A new policy at the reference that shares this backend's reference weights."""
        child = CausalLMPolicy(
            self.weights.fork(),
            self.tokenizer,
            settings=self.settings,
            optim=self.optim_config,
            seed=self.seed + len(self.forks) + 1,
            cache=self.cache,
            name=f"{self.name}/fork{len(self.forks) + 1}",
            reductions=self.reductions,
        )
        child.run_tag = self.run_tag
        child._reference_fp = self._reference_fp
        child.on_step = self.on_step
        child.arm_resume(self._pending)
        self.forks.append(child)
        return child

    def arm_resume(self, states: dict[str, dict[str, Any]]) -> None:
        """Prepare to resume from checkpointed backend states (keyed by backend name).

        The run is executed again from its start: this backend counts its optimizer steps
        without computing them until it reaches the step its state was saved at, then loads
        that state; forks made later pick up their own states. Samples drawn during the replay
        come from the on-disk cache (they are keyed by the step count), so the multiplier and
        the labels follow the same path as in the interrupted run.
        """
        self._pending = states
        state = states.pop(self.name, None)
        if state is None:
            return
        if int(state["steps"]) == 0:
            self.load_state_dict(state)
        else:
            self.replay_until = int(state["steps"])
            self._resume_state = state

    @property
    def replaying(self) -> bool:
        """True while a resumed run re-walks steps its checkpoint already holds."""
        return self.steps < self.replay_until

    def set_reference_to_policy(self) -> None:
        """Freeze the current policy as the reference (SACPO stage 2); training continues."""
        self.weights.swap_reference()
        self._reference_fp = content_key("swapped", self.reference_fingerprint(), self.steps)
        self._ref_cache.clear()
        self.optimizer = self._make_optimizer()

    def state_dict(self) -> dict[str, Any]:
        """Weights, optimizer, sampling generator and step count (forks not included)."""
        return {
            "weights": self.weights.state_dict(),
            # A copy: the live Adam moments would keep changing inside a kept state.
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "generator": self.generator.get_state(),
            "steps": self.steps,
            "reference_fp": self._reference_fp,
            "critics": self.critics.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.critics.load_state_dict(state.get("critics", {}))  # makes missing critics first
        self.weights.load_state_dict(state["weights"])
        self.optimizer = self._make_optimizer()
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.steps = int(state["steps"])
        if state.get("reference_fp") != self._reference_fp:
            self._ref_cache.clear()
        self._reference_fp = state.get("reference_fp")

    def save_pretrained(self, folder: str) -> None:
        """Final weights: the LoRA adapter (peft format) or the full model (safetensors)."""
        self.weights.save(folder)
        self.tokenizer.save_pretrained(folder)
