"""Build the pieces of a language-model run from its config: data, scorers, policy, task."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch

from constrained_align.backends.causal_lm import CausalLMPolicy, LMSettings
from constrained_align.backends.lm_task import LMTask
from constrained_align.backends.sampling import SamplingSettings
from constrained_align.backends.sequences import PromptBatch
from constrained_align.backends.weights import FOLDED_FILE, FullWeights, LoraWeights
from constrained_align.config import ConfigError, RunConfig
from constrained_align.data import load_default, load_default_prompts, load_file
from constrained_align.data.prompts import load_prompts
from constrained_align.models.backbones import BackboneNotFoundError
from constrained_align.models.policy import ModelPool, load_causal_lm
from constrained_align.models.score_model import ScoreModel
from constrained_align.models.scorer import SequenceScorer, TextScorer
from constrained_align.utils.cache import DiskCache
from constrained_align.utils.distributed import Reductions, local_device

TINY_SCORER_SEEDS = {"reward": 1, "cost": 2}


def _subset(rows: list[dict[str, Any]], limit: int | None, seed: int) -> list[dict[str, Any]]:
    if limit is None or limit >= len(rows):
        return rows
    picked = sorted(random.Random(seed).sample(range(len(rows)), limit))
    return [rows[i] for i in picked]


def _by_source(rows: list[dict[str, Any]], sources: list[str] | None) -> list[dict[str, Any]]:
    if sources is None:
        return rows
    kept = [r for r in rows if any(str(r["source"]).startswith(s) for s in sources)]
    if not kept:
        present = sorted({str(r["source"]) for r in rows})
        raise ConfigError(f"no rows from sources {sources}; the data has {present}")
    return kept


def load_pairs_rows(config: RunConfig) -> list[dict[str, Any]]:
    """The run's preference pairs as canonical dict rows."""
    data = config.data
    ds = load_default("train") if data.pairs == "default" else load_file(data.pairs)
    rows = _by_source(ds.to_list(), data.pair_sources)
    return _subset(rows, data.max_pairs, config.seed)


def load_prompt_batch(config: RunConfig, *, split: str = "train") -> PromptBatch:
    """The run's prompts (train split of the embedded set by default, or a prompts file)."""
    data = config.data
    default = data.prompts == "default"
    ds = load_default_prompts(split) if default else load_prompts(data.prompts)  # type: ignore[arg-type]
    rows = _subset(_by_source(ds.to_list(), data.prompt_sources), data.max_prompts, config.seed)
    return PromptBatch([r["prompt"] for r in rows], [list(r["context"] or []) for r in rows])


def load_text_scorer(spec: str, kind: str, batch_size: int, *, progress: bool) -> TextScorer:
    """A saved score model, or a random tiny one (``tiny``) for smoke tests."""
    if spec == "tiny":
        model = ScoreModel.from_backbone(
            "tiny-encoder", kind, max_length=128, seed=TINY_SCORER_SEEDS[kind]
        )
        return TextScorer(model, batch_size=batch_size, progress=progress)
    path = Path(spec)
    if not path.is_dir():
        raise ConfigError(f"scorers.{kind}: {spec} is not a saved score-model folder")
    scorer = TextScorer.from_pretrained(path, batch_size=batch_size, progress=progress)
    if scorer.kind != kind:
        raise ConfigError(f"scorers.{kind}: {spec} is a {scorer.kind} model, not a {kind} model")
    return scorer


def build_scorer(config: RunConfig, cache: DiskCache | None, *, progress: bool) -> SequenceScorer:
    size = config.scorers.scorer_batch_size
    return SequenceScorer(
        load_text_scorer(config.scorers.reward, "reward", size, progress=progress),
        load_text_scorer(config.scorers.cost, "cost", size, progress=progress),
        cache=cache,
    )


POSITIVE = (
    "task.samples_per_prompt",
    "task.reference_samples",
    "task.prompts_per_step",
    "model.max_prompt_tokens",
    "model.max_response_tokens",
    "model.chunk_size",
    "model.inference_batch_size",
    "model.lora_r",
    "generation.max_new_tokens",
    "data.pair_batch_size",
    "scorers.scorer_batch_size",
)
OPTIONAL_POSITIVE = ("data.max_pairs", "data.max_prompts")


def check_lm_config(config: RunConfig) -> None:
    """Sizes that must be at least 1, checked before anything loads (one clear error)."""
    for path in POSITIVE + OPTIONAL_POSITIVE:
        section, name = path.split(".")
        value = getattr(getattr(config, section), name)
        if (value is not None or path in POSITIVE) and (value is None or value < 1):
            raise ConfigError(f"{path} must be at least 1, got {value}")


def build_policy(
    config: RunConfig,
    cache: DiskCache | None,
    dist: Reductions | None = None,
    pool: ModelPool | None = None,
) -> CausalLMPolicy:
    """The policy backend: model (LoRA or full), tokenizer, lengths, sampling, optimizer.

    Every data-parallel process builds the same weights (seeded); each samples from its own
    generator (the run's seed plus its rank) and averages gradients through ``dist``. With a
    ``pool`` the base model is loaded once per process and copied.
    """
    m = config.model
    dist = dist or Reductions()
    model, tokenizer = _load_base(config, pool)
    if m.lora:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            r=m.lora_r,
            lora_alpha=m.lora_alpha,
            lora_dropout=0.0,
            target_modules=list(m.lora_target_modules),
            task_type="CAUSAL_LM",
        )
        torch.manual_seed(config.seed)  # LoRA's A matrices draw from the global RNG
        try:
            weights: LoraWeights | FullWeights = LoraWeights(get_peft_model(model, lora))
        except ValueError as err:  # e.g. no module matches lora_target_modules
            raise ConfigError(f"model.lora_target_modules: {err}") from err
    else:
        weights = FullWeights(model)
    return CausalLMPolicy(
        weights,
        tokenizer,
        settings=lm_settings(config),
        optim=config.train.optim,
        seed=config.seed + dist.rank,
        cache=cache,
        reductions=dist,
    )


def _load_base(config: RunConfig, pool: ModelPool | None) -> tuple[Any, Any]:
    m = config.model
    device = local_device(m.device)
    # flash-attention needs the model on CUDA: on CPU "auto" means sdpa.
    attn = "sdpa" if device == "cpu" and m.attn_implementation == "auto" else m.attn_implementation
    load = pool.load if pool is not None else load_causal_lm
    try:
        model, tokenizer = load(m.policy, dtype=m.dtype, attn_implementation=attn, seed=config.seed)
    except OSError as err:
        raise BackboneNotFoundError(f"model.policy: cannot load {m.policy!r}: {err}") from err
    return model.to(device), tokenizer


def lm_settings(config: RunConfig) -> LMSettings:
    """Lengths, batching and sampling of a run's policy backend."""
    m, g = config.model, config.generation
    return LMSettings(
        max_prompt_tokens=m.max_prompt_tokens,
        max_response_tokens=m.max_response_tokens,
        chunk_size=m.chunk_size,
        inference_batch_size=m.inference_batch_size,
        sampling=SamplingSettings(g.max_new_tokens, g.sampling_temperature, g.top_p),
    )


def load_trained_policy(
    config: RunConfig, final: Path, cache: DiskCache | None, pool: ModelPool | None = None
) -> CausalLMPolicy:
    """The policy a run saved in ``final/`` over its reference: the base model with the saved
    LoRA adapter (and any adapters SACPO folded into the base), or the saved full model with
    the base as reference."""
    base, tokenizer = _load_base(config, pool)
    if config.model.lora:
        from peft import PeftModel

        weights: LoraWeights | FullWeights = LoraWeights(PeftModel.from_pretrained(base, final))
        folded = final / FOLDED_FILE
        if folded.is_file():
            weights.load_folded(torch.load(folded, weights_only=False))
    else:
        from transformers import AutoModelForCausalLM

        policy = AutoModelForCausalLM.from_pretrained(final, dtype=base.dtype).to(base.device)
        weights = FullWeights(policy, reference=base)
    return CausalLMPolicy(
        weights,
        tokenizer,
        settings=lm_settings(config),
        optim=config.train.optim,
        seed=config.seed,
        cache=cache,
    )


def build_task(config: RunConfig, backend: CausalLMPolicy) -> LMTask:
    t = config.task
    return LMTask(
        backend,
        load_pairs_rows(config),
        load_prompt_batch(config),
        pair_batch_size=config.data.pair_batch_size,
        samples_per_prompt=t.samples_per_prompt,
        reference_samples=t.reference_samples,
        prompts_per_step=t.prompts_per_step,
        seed=config.seed,
    )
