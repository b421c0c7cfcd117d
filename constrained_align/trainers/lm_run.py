"""Train a registry key on a causal LM: the ``constrained-align train`` pipeline.

The run folder holds ``config.yaml`` (resolved), ``metrics.jsonl`` (one strict-JSON record per
logged epoch: stage, λ, cost estimate, losses, ``rewards/*``, ``kl``), ``checkpoints/``,
``cache/`` (samples and scores by content hash), ``final/`` (the adapter in peft format or the
full model as safetensors, the tokenizer, ``primal_dual.json``) and ``summary.json``.

The algorithm is the registry's ``train(config, ctx)``, the very function the testbed checks;
this module only builds the context, logs, checkpoints and evaluates.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from constrained_align import algorithms
from constrained_align.algorithms import RunContext
from constrained_align.backends.causal_lm import CausalLMPolicy
from constrained_align.backends.sequences import PromptBatch
from constrained_align.config import ConfigError, RunConfig, dump_yaml, to_dict
from constrained_align.models.policy import ModelPool
from constrained_align.models.scorer import SequenceScorer
from constrained_align.trainers.checkpoint import (
    Checkpointer,
    all_backends,
    latest_checkpoint,
    load_checkpoint,
    set_rng_state,
)
from constrained_align.trainers.lm_setup import (
    build_policy,
    build_scorer,
    build_task,
    check_lm_config,
    load_prompt_batch,
)
from constrained_align.utils import json_safe, write_json, write_text
from constrained_align.utils.cache import DiskCache, code_fingerprint, content_key
from constrained_align.utils.distributed import Reductions, from_environment

EVAL_SEED_OFFSET = 7919
KL_SEED_OFFSET = 104729


@torch.no_grad()
def evaluate_policy(
    backend: CausalLMPolicy,
    scorer: SequenceScorer,
    prompts: PromptBatch,
    *,
    reference: bool,
    seed: int,
    dist: Reductions | None = None,
) -> dict[str, float]:
    """Mean reward, mean cost, harmful ratio (c > 0) and mean length of one seeded sample per
    prompt (the same seed before and after training, so the two are comparable); each
    data-parallel process samples its share of the prompts."""
    dist = dist or Reductions()
    mine = prompts.take(dist.shard(range(len(prompts))))
    samples = backend.sample(mine, 1, reference=reference, seed=seed)
    reward = dist.gather(scorer.reward(samples.sequences))
    cost = dist.gather(scorer.cost(samples.sequences))
    tokens = dist.gather(samples.sequences.response_mask.sum(-1).double())
    return {
        "reward": float(reward.mean()),
        "cost": float(cost.mean()),
        "harmful_ratio": float((cost > 0).double().mean()),
        "response_tokens": float(tokens.mean()),
        "prompts": len(prompts),
    }


@torch.no_grad()
def estimate_kl(
    backend: CausalLMPolicy, prompts: PromptBatch, seed: int, dist: Reductions | None = None
) -> float:
    """Monte-Carlo KL(π‖π_ref) = E_{y∼π}[log π(y|x) − log π_ref(y|x)] on fresh samples (each
    data-parallel process samples its share of the prompts)."""
    dist = dist or Reductions()
    samples = backend.sample(prompts.take(dist.shard(range(len(prompts)))), 1, seed=seed)
    seqs = samples.sequences
    ratio = backend.logprobs(seqs).sequence - backend.logprobs(seqs, reference=True).sequence
    return float(dist.gather(ratio).mean())


class RunLog:
    """``ctx.log``: writes metrics.jsonl, adds the KL estimate, checkpoints, drives the bar;
    while a resumed run replays, it restores the saved records instead."""

    def __init__(self, out: Path, backend: CausalLMPolicy, ctx: RunContext, config: RunConfig):
        self.path = out / "metrics.jsonl"
        self.backend = backend
        self.ctx = ctx
        self.config = config
        self.records: list[dict[str, Any]] = []
        self.written = 0  # records already in metrics.jsonl
        self.last_totals: dict[str, float] = {}
        self.replay: list[dict[str, Any]] = []
        self.replay_state: dict[str, Any] | None = None
        o = config.output
        self.checkpoints = Checkpointer(
            out / "checkpoints",
            backend,
            every=o.save_every_epochs,
            keep=o.keep_checkpoints,
            dist=ctx.dist,
        )
        self.kl_prompts = backend_prompts(ctx, o.kl_prompts)
        show = config.output.progress and ctx.dist.is_main
        self.bar = tqdm(desc="training", unit="step", disable=not show)

    def __call__(self, record: dict[str, Any]) -> None:
        index = len(self.records)
        if index < len(self.replay):  # replaying: the saved record is the truth
            record.clear()
            record.update(self.replay[index])
            self.records.append(record)
            if index == len(self.replay) - 1:
                self._end_replay()
            return
        # A record is written when the next one arrives (or at the end), because algorithms
        # may add to it after logging it (c_dpo's on-policy cost estimate of the round).
        self._write_pending()
        if self.kl_prompts is not None:
            seed = self.config.seed + KL_SEED_OFFSET + index
            record["kl"] = estimate_kl(self.backend, self.kl_prompts, seed, self.ctx.dist)
        if self.ctx.primal_dual is not None and "dual/lambda" not in record:
            record["dual/lambda"] = self.ctx.primal_dual.lam()
        record.update(self._timings())
        self.records.append(record)
        self.bar.set_postfix_str(_postfix(record), refresh=False)
        self.checkpoints.maybe_save(self.records, self.ctx.primal_dual)

    def totals(self) -> dict[str, float]:
        """Seconds generating, scoring and in optimizer steps, and tokens generated, so far
        in this process (the policy and its forks together)."""
        totals = {"generation": 0.0, "training": 0.0, "generated_tokens": 0.0}
        for backend in all_backends(self.backend):
            for key in totals:
                totals[key] += backend.timers[key]
        totals["scoring"] = getattr(self.ctx.scorer, "seconds", 0.0)
        return totals

    def _timings(self) -> dict[str, float]:
        """Seconds generating, scoring and in optimizer steps since the previous record, and
        generated tokens per second of generation."""
        totals = self.totals()
        delta = {k: v - self.last_totals.get(k, 0.0) for k, v in totals.items()}
        self.last_totals = totals
        out = {f"time/{k}": delta[k] for k in ("generation", "scoring", "training")}
        if delta["generation"] > 0:
            out["tokens/s"] = delta["generated_tokens"] / delta["generation"]
        return out

    def _write_pending(self) -> None:
        pending = self.records[self.written :]
        if pending and self.ctx.dist.is_main:
            with self.path.open("a") as f:
                f.writelines(json.dumps(json_safe(r), allow_nan=False) + "\n" for r in pending)
        self.written = len(self.records)

    def close(self) -> None:
        """Write the last record and close the progress bar."""
        self._write_pending()
        self.bar.close()

    def _end_replay(self) -> None:
        state = self.replay_state
        assert state is not None
        set_rng_state(state["rng"])
        self.written = len(self.records) - 1  # the last saved record was not written yet
        self._timings()  # the next record's timings start here, not at the process start
        saved, pd = state["primal_dual"], self.ctx.primal_dual
        if saved is not None and pd is not None:
            lam = pd.lam()
            pd.load_state_dict(saved)
            if abs(lam - pd.lam()) > 1e-6 * max(1.0, abs(pd.lam())):
                raise RuntimeError(
                    f"resume replay reached λ = {lam:.6g} but the checkpoint holds "
                    f"{pd.lam():.6g}; the run's inputs changed since it was saved"
                )


def backend_prompts(ctx: RunContext, count: int) -> PromptBatch | None:
    if count <= 0:
        return None
    batch = ctx.task.prompts(0)
    return PromptBatch(batch.prompts[:count], batch.contexts[:count])


def _postfix(record: dict[str, Any]) -> str:
    keys = ("stage", "loss/policy", "dual/lambda", "kl")
    parts = []
    for key in keys:
        if key in record:
            value = record[key]
            parts.append(f"{key.split('/')[-1]}={value:.4g}" if isinstance(value, float) else value)
    return " ".join(str(p) for p in parts)


def _prepare_output(
    out: Path, resume: bool, config: RunConfig, dist: Reductions
) -> dict[str, Any] | None:
    """Check the folder; on resume return the latest checkpoint's state.

    A folder whose run stopped before its first record (an empty log, no checkpoint) counts
    as empty, so a failed start does not lock the folder.
    """
    metrics = out / "metrics.jsonl"
    found = latest_checkpoint(out / "checkpoints")
    if not resume:
        if metrics.exists() and (metrics.stat().st_size > 0 or found is not None):
            raise ConfigError(f"{out} already holds a run; pass --resume or another --output-dir")
        return None
    if found is None:
        raise ConfigError(f"--resume: no complete checkpoint under {out / 'checkpoints'}")
    if not config.output.disk_cache:
        raise ConfigError("--resume replays the run from its sample cache: disk_cache is off")
    return load_checkpoint(found, dist)


def _start_log(
    out: Path, state: dict[str, Any] | None, run_tag: str, config: RunConfig, dist: Reductions
) -> None:
    """Fresh: an empty metrics.jsonl. Resume: the same run (else an error), log trimmed to the
    checkpoint (its last record is written only when the next one arrives). The resolved
    config.yaml either way. Only the main process writes."""
    if state is not None and state.get("run_tag") != run_tag:
        raise ConfigError(
            f"--resume: {out} was trained with other settings, data, models or library version "
            "than these; resume with the run's own config.yaml, or start a new --output-dir"
        )
    if not dist.is_main:
        return
    metrics = out / "metrics.jsonl"
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "config.yaml", dump_yaml(config, with_docs=False))
    if state is None:
        write_text(metrics, "")
        return
    kept = metrics.read_text().splitlines()[: len(state["records"]) - 1]
    write_text(metrics, "".join(line + "\n" for line in kept))


def run_tag(config: RunConfig, backend: CausalLMPolicy, scorer: SequenceScorer, task: Any) -> str:
    """Identity of a run's inputs: settings, reference weights, tokenizer, score models, pairs,
    prompts, the library version and its source code. Policy samples are cached under it (with
    the step count), so two runs share them only when everything that determines them is the
    same."""
    from constrained_align import __version__

    settings = {k: v for k, v in to_dict(config).items() if k != "output"}
    return content_key(
        settings,
        backend.reference_fingerprint(),
        backend.tokenizer_fingerprint(),
        scorer.fingerprint("reward"),
        scorer.fingerprint("cost"),
        task.rows,
        task.all_prompts.prompts,
        task.all_prompts.contexts,
        __version__,
        code_fingerprint(),
    )


def train_lm(
    config: RunConfig,
    output_dir: str | Path,
    *,
    resume: bool = False,
    dist: Reductions | None = None,
    pool: ModelPool | None = None,
) -> dict[str, Any]:
    """Train ``config.algorithm`` on a causal LM and write the run folder; returns the summary.

    Under ``accelerate launch`` every process runs this function (``dist`` defaults to the
    launch's reductions); the main process alone writes the run folder. A ``pool`` shares
    loaded base models between the runs of one process (``compare``).
    """
    check_lm_config(config)
    dist = dist or from_environment()
    check_processes(config, dist)
    out = Path(output_dir)
    state = _prepare_output(out, resume, config, dist)
    dist.barrier()  # every process has looked at the folder before the main one writes to it
    cache_dir = Path(config.output.cache_dir) if config.output.cache_dir else out / "cache"
    cache = DiskCache(cache_dir) if config.output.disk_cache else None
    started = time.perf_counter()
    backend = build_policy(config, cache, dist, pool)
    scorer = build_scorer(config, cache, progress=config.output.progress and dist.is_main)
    task = build_task(config, backend)
    backend.run_tag = run_tag(config, backend, scorer, task)
    _start_log(out, state, backend.run_tag, config, dist)
    ctx = RunContext(backend=backend, scorer=scorer, task=task, seed=config.seed, dist=dist)
    log = RunLog(out, backend, ctx, config)
    ctx.log = log
    backend.on_step = lambda b: log.bar.update(1)
    if state is not None:
        backend.arm_resume(dict(state["backends"]))
        log.replay, log.replay_state = state["records"], state
    evaluate = _held_out_evaluation(config, backend, scorer, dist)
    summary: dict[str, Any] = {"algorithm": config.algorithm, "seed": config.seed}
    summary["before"] = evaluate(reference=True)
    train_start = time.perf_counter()
    result = algorithms.get(config.algorithm).train(config.train, ctx)
    log.close()
    summary["train_seconds"] = time.perf_counter() - train_start
    summary["after"] = evaluate(reference=False)
    lam = torch.tensor([result.lam if result.lam is not None else 0.0])
    dist.check_in_sync("the trained weights and λ", [*backend.trainable(), lam])
    summary.update(
        {
            "lambda": result.lam,
            "lambda_trajectory": [r.get("dual/lambda") for r in log.records],
            "optimizer_steps": backend.steps,
            "records": len(log.records),
            "extras": result.extras,
            "cache": None if cache is None else {"hits": cache.hits, "misses": cache.misses},
            "processes": dist.world_size,
            "timers": log.totals(),
            "wall_seconds": time.perf_counter() - started,
        }
    )
    summary = {k: v for k, v in summary.items() if v is not None or k == "lambda"}
    if dist.is_main:
        _save_final(out / "final", backend, result)
        write_json(out / "summary.json", summary)
    dist.barrier()
    return summary


def check_processes(config: RunConfig, dist: Reductions) -> None:
    """What a data-parallel launch needs: an online key and whole prompt shards."""
    if dist.world_size == 1:
        return
    if algorithms.get(config.algorithm).family != "online":
        raise ConfigError(
            f"{config.algorithm} runs in one process; data-parallel launches "
            "(accelerate launch with several processes) train the online keys"
        )
    if config.task.prompts_per_step % dist.world_size:
        raise ConfigError(
            f"task.prompts_per_step = {config.task.prompts_per_step} must be a multiple of the "
            f"{dist.world_size} processes (each rolls out the same number of prompts)"
        )


def _held_out_evaluation(
    config: RunConfig, backend: CausalLMPolicy, scorer: SequenceScorer, dist: Reductions
) -> Any:
    """``evaluate(reference=...)`` on the held-out prompts (None when ``eval_prompts`` is 0)."""
    if config.data.eval_prompts <= 0:
        return lambda reference: None
    prompts = load_prompt_batch(_eval_config(config), split="eval")
    seed = config.seed + EVAL_SEED_OFFSET

    def evaluate(reference: bool) -> dict[str, float]:
        return evaluate_policy(backend, scorer, prompts, reference=reference, seed=seed, dist=dist)

    return evaluate


def _eval_config(config: RunConfig) -> RunConfig:
    """The held-out prompts: the embedded eval split, ``eval_prompts`` of them (seeded)."""
    from dataclasses import replace

    data = replace(config.data, prompts="default", max_prompts=config.data.eval_prompts)
    return replace(config, data=data)


def _save_final(folder: Path, backend: CausalLMPolicy, result: Any) -> None:
    staging = folder.with_name(folder.name + ".partial")
    staging.mkdir(parents=True, exist_ok=True)
    backend.save_pretrained(str(staging))
    if result.primal_dual is not None:
        write_json(staging / "primal_dual.json", result.primal_dual.state_dict())
    if folder.exists():
        import shutil

        shutil.rmtree(folder)
    staging.rename(folder)
