"""Build the pieces of a language-model run from its config: data, scorers, policy, task.

:func:`check_run` checks what can be checked before anything loads (sizes, data paths, model
names); :func:`dry_run` reports it for ``train --dry-run``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from constrained_align import algorithms
from constrained_align.backends.causal_lm import CausalLMPolicy, LMSettings, PromptBatch
from constrained_align.backends.causal_lm.engine import Engine
from constrained_align.backends.causal_lm.loading import ModelPool, load_causal_lm
from constrained_align.backends.causal_lm.sequences import SamplingSettings
from constrained_align.backends.causal_lm.task import LMTask
from constrained_align.backends.causal_lm.weights import FOLDED_FILE, FullWeights, LoraWeights
from constrained_align.config import ConfigError, LMRunConfig, PolicyConfig
from constrained_align.data import (
    load_default,
    load_default_prompts,
    load_file,
    load_pku_saferlhf,
    seeded_subset,
)
from constrained_align.data.prompts import load_prompts
from constrained_align.models import HUB_ID, BackboneNotFoundError, describe_source
from constrained_align.scoring import SequenceScorer
from constrained_align.scoring.loading import describe_scorer, load_scorer
from constrained_align.utils import load_tensors
from constrained_align.utils.cache import DiskCache
from constrained_align.utils.distributed import Reductions, local_device

# ---------------------------------------------------------------------------------- checks

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


def check_run(config: LMRunConfig) -> None:
    """Sizes that must be at least 1, checked before anything loads (one clear error)."""
    for path in POSITIVE + OPTIONAL_POSITIVE:
        section, name = path.split(".")
        value = getattr(getattr(config, section), name)
        if (value is not None or path in POSITIVE) and (value is None or value < 1):
            raise ConfigError(f"{path} must be at least 1, got {value}")
    dual = getattr(config.train, "dual", None)
    if dual and dual.constraints and not algorithms.get(config.algorithm).multi_constraint:
        takers = [k for k, spec in algorithms.REGISTRY.items() if spec.multi_constraint]
        raise ConfigError(
            f"train.dual.constraints: {config.algorithm} trains against one cost; further "
            f"constraints are taken by {', '.join(takers)}"
        )


def dry_run(config: LMRunConfig) -> list[str]:
    """Check a run config without loading weights or training: sizes, the data sources and
    the model names. Returns one line per source; raises on the first problem."""
    check_run(config)
    data = config.data
    lines = [f"pairs: {_describe_data(data.pairs, 'data.pairs')}"]
    prompts = "the distinct prompts of the pairs" if data.prompts == "pairs" else None
    lines.append(f"prompts: {prompts or _describe_data(data.prompts, 'data.prompts')}")
    try:
        lines.append("policy: " + describe_source(config.model.policy, marker="config.json"))
    except BackboneNotFoundError as err:
        raise ConfigError(f"model.policy: {err}") from err
    specs = {"reward": config.scorers.reward, "cost": config.scorers.cost}
    specs.update({f"constraints.{k}": v for k, v in config.scorers.constraints.items()})
    for name, spec in specs.items():
        try:
            lines.append(describe_scorer(spec, name))
        except BackboneNotFoundError as err:
            raise ConfigError(f"scorers.{name}: {err}") from err
    return lines


def _describe_data(spec: str, field: str) -> str:
    if spec == "default":
        return "the embedded default data"
    if Path(spec).expanduser().is_file():
        return f"{spec} (file)"
    if HUB_ID.fullmatch(spec) and not Path(spec).exists():
        return f"{spec} (hub dataset id, not fetched by a dry run)"
    raise ConfigError(f"{field}: {spec} is not 'default', a file or a hub dataset id")


# ---------------------------------------------------------------------------------- data


def _by_source(rows: list[dict[str, Any]], sources: list[str] | None) -> list[dict[str, Any]]:
    if sources is None:
        return rows
    kept = [r for r in rows if any(str(r["source"]).startswith(s) for s in sources)]
    if not kept:
        present = sorted({str(r["source"]) for r in rows})
        raise ConfigError(f"no rows from sources {sources}; the data has {present}")
    return kept


def load_pairs_rows(config: LMRunConfig) -> list[dict[str, Any]]:
    """The run's preference pairs as canonical dict rows."""
    data = config.data
    if data.pairs == "default":
        ds = load_default("train")
    elif Path(data.pairs).expanduser().exists() or data.pairs_format not in ("auto", "pku"):
        ds = load_file(data.pairs, fmt=data.pairs_format)
    else:  # a hub dataset id in PKU-SafeRLHF's format
        ds = load_pku_saferlhf(data.pairs, revision=data.pairs_revision or "v0")
    rows = _by_source(ds.to_list(), data.pair_sources)
    return seeded_subset(rows, data.max_pairs, config.seed)


def _batch(rows: list[dict[str, Any]]) -> PromptBatch:
    return PromptBatch([r["prompt"] for r in rows], [list(r["context"] or []) for r in rows])


def load_prompt_batch(config: LMRunConfig, pairs: list[dict[str, Any]]) -> PromptBatch:
    """The run's prompts: the embedded train prompts, a prompts file, or the pairs' prompts."""
    data = config.data
    if data.prompts == "pairs":
        seen: dict[tuple[str, str], dict[str, Any]] = {}
        for row in pairs:
            seen.setdefault((str(row["context"] or []), row["prompt"]), row)
        rows = list(seen.values())
    else:
        ds = load_default_prompts("train") if data.prompts == "default" else None
        rows = (ds if ds is not None else load_prompts(data.prompts)).to_list()
        rows = _by_source(rows, data.prompt_sources)
    return _batch(seeded_subset(rows, data.max_prompts, config.seed))


# ---------------------------------------------------------------------------------- models


def build_scorer(config: LMRunConfig, cache: DiskCache | None, *, progress: bool) -> SequenceScorer:
    """The run's reward and cost models (and those of further constraints), scoring text
    with their own tokenizers, or Python functions over text."""
    size = config.scorers.scorer_batch_size

    def load(spec: str, kind: str) -> Any:
        return load_scorer(spec, kind, batch_size=size, progress=progress)

    return SequenceScorer(
        load(config.scorers.reward, "reward"),
        load(config.scorers.cost, "cost"),
        cache=cache,
        constraints={name: load(spec, "cost") for name, spec in config.scorers.constraints.items()},
    )


def lora_config(m: PolicyConfig) -> Any:
    """peft's ``LoraConfig`` of a run's ``model:`` section (rank, alpha, target modules; no
    dropout, so a step is deterministic)."""
    from peft import LoraConfig

    return LoraConfig(
        r=m.lora_r,
        lora_alpha=m.lora_alpha,
        lora_dropout=0.0,
        target_modules=list(m.lora_target_modules),
        task_type="CAUSAL_LM",
    )


def build_policy(
    config: LMRunConfig, dist: Reductions | None = None, pool: ModelPool | None = None
) -> CausalLMPolicy:
    """The policy backend: model (LoRA or full), tokenizer, lengths, sampling, optimizer.

    Every data-parallel process builds the same weights and sampling generator (seeded);
    the optimizer steps go through accelerate's engine (``engine:``). With a ``pool`` the base
    model is loaded once per process and copied.
    """
    m = config.model
    dist = dist or Reductions()
    model, tokenizer = _load_base(config, pool)
    if m.lora:
        from peft import get_peft_model

        lora = lora_config(m)
        torch.manual_seed(config.seed)  # LoRA's A matrices draw from the global RNG
        try:
            weights: LoraWeights | FullWeights = LoraWeights(get_peft_model(model, lora))
        except ValueError as err:  # e.g. no module matches lora_target_modules
            raise ConfigError(f"model.lora_target_modules: {err}") from err
    else:
        weights = FullWeights(model)
    engine = Engine(
        mixed_precision=config.engine.mixed_precision,
        gradient_accumulation_steps=config.engine.gradient_accumulation_steps,
    )
    return _policy(config, weights, tokenizer, seed=config.seed, dist=dist, engine=engine)


def _policy(
    config: LMRunConfig,
    weights: Any,
    tokenizer: Any,
    *,
    seed: int,
    dist: Reductions | None,
    engine: Engine | None = None,
) -> CausalLMPolicy:
    m, g = config.model, config.generation
    settings = LMSettings(
        max_prompt_tokens=m.max_prompt_tokens,
        max_response_tokens=m.max_response_tokens,
        chunk_size=m.chunk_size,
        inference_batch_size=m.inference_batch_size,
        sampling=SamplingSettings(g.max_new_tokens, g.sampling_temperature, g.top_p),
        fast_paths=m.fast_paths,
        pack_tokens=m.pack_tokens,
    )
    optim = config.train.optim
    return CausalLMPolicy(
        weights,
        tokenizer,
        settings=settings,
        optim=optim,
        seed=seed,
        reductions=dist,
        engine=engine,
    )


def _load_base(config: LMRunConfig, pool: ModelPool | None) -> tuple[Any, Any]:
    m = config.model
    device = local_device(m.device)
    # flash-attention needs the model on CUDA: on CPU "auto" means sdpa.
    attn = "sdpa" if device == "cpu" and m.attn_implementation == "auto" else m.attn_implementation
    load = pool.load if pool is not None else load_causal_lm
    try:
        model, tokenizer = load(
            m.policy,
            dtype=m.dtype,
            attn_implementation=attn,
            seed=config.seed,
            trust_remote_code=m.trust_remote_code,
        )
    except OSError as err:
        raise BackboneNotFoundError(f"model.policy: cannot load {m.policy!r}: {err}") from err
    return model.to(device), tokenizer


def load_trained_policy(
    config: LMRunConfig, final: Path, pool: ModelPool | None = None
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
            weights.load_folded(load_tensors(folded, what="list of folded adapters"))
    else:
        from transformers import AutoModelForCausalLM

        policy = AutoModelForCausalLM.from_pretrained(final, dtype=base.dtype).to(base.device)
        weights = FullWeights(policy, reference=base)
    return _policy(config, weights, tokenizer, seed=config.seed, dist=None)


RunData = tuple[list[dict[str, Any]], PromptBatch]


def load_run_data(config: LMRunConfig) -> RunData:
    """The run's pairs and prompts, read and validated (before any model loads, so a bad file
    fails in seconds)."""
    pairs = load_pairs_rows(config)
    return pairs, load_prompt_batch(config, pairs)


def build_task(config: LMRunConfig, backend: CausalLMPolicy, data: RunData | None = None) -> LMTask:
    """Pairs and prompts of the run (``data``, or read now), tokenized by ``backend``."""
    t = config.task
    pairs, prompts = data if data is not None else load_run_data(config)
    return LMTask(
        backend,
        pairs,
        prompts,
        pair_batch_size=config.data.pair_batch_size,
        samples_per_prompt=t.samples_per_prompt,
        reference_samples=t.reference_samples,
        prompts_per_step=t.prompts_per_step,
        seed=config.seed,
    )
