"""Train a registry key on a causal LM: the ``constrained-align train`` pipeline.

The run folder holds ``config.yaml`` (resolved), ``metrics.jsonl`` (one strict-JSON record per
logged epoch or step: stage, λ, cost estimate, losses, ``rewards/*``, ``kl``), ``checkpoints/``,
``cache/`` (samples and scores by content hash), ``final/`` (the adapter in peft format or the
full model as safetensors, the tokenizer, ``primal_dual.json``) and ``summary.json`` (the
held-out evaluation before and after, λ's trajectory, steps, timings).

The algorithm is the registry's ``train(config, ctx)``, the very function the testbed checks;
this module builds the context (:mod:`.build`), hands the algorithm the run's backend
(:mod:`.replay`) and log (:mod:`.log`), and evaluates and saves what it trained.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from constrained_align import algorithms
from constrained_align.algorithms import RunContext, RunResult
from constrained_align.backends.causal_lm import CausalLMPolicy
from constrained_align.backends.causal_lm.loading import ModelPool
from constrained_align.config import ConfigError, LMRunConfig, PolicyEvalConfig, dump_yaml, to_dict
from constrained_align.eval.policy import evaluate_policy, load_eval_prompts
from constrained_align.primal_dual import save_dual_state
from constrained_align.runner.build import (
    build_policy,
    build_scorer,
    build_task,
    check_run,
    load_run_data,
)
from constrained_align.runner.checkpoint import latest_checkpoint, load_checkpoint
from constrained_align.runner.folder import RunFolder
from constrained_align.runner.log import RunLog
from constrained_align.runner.replay import Replay, RunBackend
from constrained_align.scoring import SequenceScorer
from constrained_align.types import TrainingError
from constrained_align.utils import write_json, write_text
from constrained_align.utils.cache import DiskCache, code_fingerprint, content_key
from constrained_align.utils.distributed import Reductions, from_environment

EVAL_SEED_OFFSET = 7919
#: What a train run writes in its folder (the only entries a restart or --overwrite removes).
TRAIN_ENTRIES = (
    "config.yaml",
    "metrics.jsonl",
    "summary.json",
    "checkpoints",
    "final",
    "final.partial",
    "cache",
    "eval.json",
)


@dataclass
class Run:
    """The pieces of one training run, built from its config."""

    config: LMRunConfig
    out: Path
    dist: Reductions
    cache: DiskCache | None
    backend: RunBackend
    ctx: RunContext
    log: RunLog


def train_lm(
    config: LMRunConfig,
    output_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    dist: Reductions | None = None,
    pool: ModelPool | None = None,
) -> dict[str, Any]:
    """Train ``config.algorithm`` on a causal LM and write the run folder; returns the summary.

    Under ``accelerate launch`` every process runs this function (``dist`` defaults to the
    launch's reductions); the main process alone writes the run folder. A ``pool`` shares
    loaded base models between the runs of one process (``compare``).

    Raises:
        ConfigError: the folder is refused (:mod:`.folder`), or the config cannot run.
        TrainingError: training diverged or took no step; ``summary.json`` records the
            failure and the latest checkpoint is the last good one.
    """
    started = time.perf_counter()
    dist = dist or from_environment()
    folder = claim_folder(config, Path(output_dir), resume=resume, overwrite=overwrite, dist=dist)
    try:
        run = start_run(config, Path(output_dir), resume=resume, dist=dist, pool=pool)
        try:
            return _train(run, started)
        except TrainingError as err:
            _record_failure(run, err, started)
            raise
        finally:
            run.log.close()  # the progress bar goes before any error is printed
    finally:
        folder.release()


def _train(run: Run, started: float) -> dict[str, Any]:
    config = run.config
    evaluate = held_out_evaluation(run)
    summary: dict[str, Any] = {"algorithm": config.algorithm, "seed": config.seed}
    summary["before"] = evaluate(reference=True)
    train_start = time.perf_counter()
    result = algorithms.get(config.algorithm).train(config.train, run.ctx)
    run.log.close()
    if run.backend.steps == 0:
        raise TrainingError(
            f"{config.algorithm} took no optimizer step: no batch of its data reached training"
        )
    summary["train_seconds"] = time.perf_counter() - train_start
    summary["after"] = evaluate(reference=False)
    lam = torch.tensor([result.lam if result.lam is not None else 0.0])
    run.dist.check_in_sync("the trained weights and λ", [*run.backend.inner.trainable(), lam])
    summary.update(
        {
            "lambda": result.lam,
            "lambda_trajectory": [r.get("dual/lambda") for r in run.log.records],
            "optimizer_steps": run.backend.steps,
            "records": len(run.log.records),
            "extras": result.extras,
            "cache": None
            if run.cache is None
            else {"hits": run.cache.hits, "misses": run.cache.misses},
            "processes": run.dist.world_size,
            "engine": run.backend.inner.engine.describe(),
            "timers": run.log.totals(),
            "wall_seconds": time.perf_counter() - started,
        }
    )
    summary = {k: v for k, v in summary.items() if v is not None or k == "lambda"}
    if run.dist.is_main:
        save_final(run.out / "final", run.backend.inner, result, len(run.log.records))
        write_json(run.out / "summary.json", summary)
    run.dist.barrier()
    return summary


def claim_folder(
    config: LMRunConfig, out: Path, *, resume: bool, overwrite: bool, dist: Reductions
) -> RunFolder:
    """Check the config, then claim the run folder (the main process takes its lock and writes
    its manifest; every process learns whether that worked)."""
    check_run(config)
    check_processes(config, dist)
    if resume and overwrite:
        raise ConfigError("--resume continues the run in the folder; --overwrite discards it")
    settings = {k: v for k, v in to_dict(config).items() if k != "output"}
    folder = RunFolder(out, kind="train", identity=content_key(settings), entries=TRAIN_ENTRIES)
    mode = "resume" if resume else "overwrite" if overwrite else "new"
    problem = None
    if dist.is_main:
        try:
            folder.claim(mode, started=lambda: _started(out))
        except ConfigError as err:
            problem = err
    if dist.mean({"refused": float(problem is not None)})["refused"] > 0:
        raise problem or ConfigError(f"{out}: the main process refused the run folder")
    return folder


def _started(out: Path) -> bool:
    """Whether the run in ``out`` has anything worth keeping: records, a checkpoint, a summary."""
    metrics = out / "metrics.jsonl"
    has_records = metrics.is_file() and metrics.stat().st_size > 0
    has_checkpoint = latest_checkpoint(out / "checkpoints") is not None
    return has_records or has_checkpoint or (out / "summary.json").is_file()


def _record_failure(run: Run, err: TrainingError, started: float) -> None:
    """``summary.json`` of a run that failed: what went wrong, and where it stopped."""
    if run.dist.is_main:
        latest = latest_checkpoint(run.out / "checkpoints")
        summary = {
            "algorithm": run.config.algorithm,
            "failed": str(err),
            "records": len(run.log.records),
            "optimizer_steps": run.backend.steps,
            "latest_checkpoint": None if latest is None else latest.name,
            "wall_seconds": time.perf_counter() - started,
        }
        write_json(run.out / "summary.json", summary)


def start_run(
    config: LMRunConfig,
    out: Path,
    *,
    resume: bool,
    dist: Reductions,
    pool: ModelPool | None,
) -> Run:
    """Build the policy, scorers and task, and start the log (on ``resume``, armed to replay
    the latest checkpoint)."""
    saved = _checkpoint_to_resume(out, config, dist) if resume else None
    dist.barrier()  # every process has read the folder before the main one writes to it
    cache_dir = Path(config.output.cache_dir) if config.output.cache_dir else out / "cache"
    cache = DiskCache(cache_dir) if config.output.disk_cache else None
    data = load_run_data(config)
    inner = build_policy(config, dist, pool)
    scorer = build_scorer(config, cache, progress=config.output.progress and dist.is_main)
    task = build_task(config, inner, data)
    tag = run_tag(config, inner, scorer, task)
    _start_log(out, saved, tag, config, dist)
    replay = Replay(saved["backends"]) if saved is not None else None
    backend = RunBackend(inner, cache=cache, run_tag=tag, replay=replay, dist=dist)
    ctx = RunContext(backend=backend, scorer=scorer, task=task, seed=config.seed, dist=dist)
    log = RunLog(out, backend, ctx, config, replay=None if saved is None else (replay, saved))
    ctx.log = log
    backend.on_step = lambda: log.bar.update(1)
    return Run(config, out, dist, cache, backend, ctx, log)


def check_processes(config: LMRunConfig, dist: Reductions) -> None:
    """What a data-parallel launch needs: an online key's rollouts split into whole, equal
    shares of prompts (the offline keys take any batch size)."""
    if dist.world_size == 1 or algorithms.get(config.algorithm).family != "online":
        return
    if config.task.prompts_per_step % dist.world_size:
        raise ConfigError(
            f"task.prompts_per_step = {config.task.prompts_per_step} must be a multiple of the "
            f"{dist.world_size} processes (each rolls out the same number of prompts)"
        )


def _checkpoint_to_resume(out: Path, config: LMRunConfig, dist: Reductions) -> dict[str, Any]:
    """The latest checkpoint's state (the replay needs the sample cache)."""
    found = latest_checkpoint(out / "checkpoints")
    if found is None:
        raise ConfigError(f"--resume: no complete checkpoint under {out / 'checkpoints'}")
    if not config.output.disk_cache:
        raise ConfigError("--resume replays the run from its sample cache: disk_cache is off")
    return load_checkpoint(found, dist)


def _start_log(
    out: Path, saved: dict[str, Any] | None, tag: str, config: LMRunConfig, dist: Reductions
) -> None:
    """Fresh: an empty metrics.jsonl. Resume: the same run (else an error), log trimmed to the
    checkpoint's records. The resolved config.yaml either way. Only the main process writes."""
    if saved is not None and saved.get("run_tag") != tag:
        raise ConfigError(
            f"--resume: {out} was trained with other settings, data, models or library version "
            "than these; resume with the run's own config.yaml, or start a new --output-dir"
        )
    if not dist.is_main:
        return
    metrics = out / "metrics.jsonl"
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "config.yaml", dump_yaml(config, with_docs=False))
    if saved is None:
        write_text(metrics, "")
        return
    kept = metrics.read_text().splitlines()[: len(saved["records"])]
    write_text(metrics, "".join(line + "\n" for line in kept))


def run_tag(config: LMRunConfig, backend: CausalLMPolicy, scorer: SequenceScorer, task: Any) -> str:
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


def held_out_evaluation(run: Run) -> Any:
    """``evaluate(reference=...)``: the sampled-mode metrics of the one policy evaluation on
    ``eval_prompts`` prompts per held-out set (None when ``eval_prompts`` is 0); the same
    seeds before and after training, so the two are comparable."""
    count = run.config.data.eval_prompts
    if count <= 0:
        return lambda reference: None
    g = run.config.generation
    settings = PolicyEvalConfig(
        helpful_prompts=count,
        harmful_prompts=count,
        xstest_prompts=count,
        max_new_tokens=g.max_new_tokens,
        modes=["sampled"],
        sampling_temperature=g.sampling_temperature,
        seed=run.config.seed + EVAL_SEED_OFFSET,
        examples=0,
    )
    prompts = load_eval_prompts(settings)

    def evaluate(reference: bool) -> dict[str, Any]:
        with run.backend.unsharded():  # the evaluation shares the prompts out itself
            result = evaluate_policy(
                run.backend, run.ctx.scorer, prompts, settings, reference=reference, dist=run.dist
            )
        metrics = {k: v for k, v in result["eval"]["sampled"].items() if k != "seconds"}
        return {**metrics, "prompts": prompts.sizes()}

    return evaluate


def save_final(folder: Path, backend: CausalLMPolicy, result: RunResult, step: int) -> None:
    """The trained weights, tokenizer and multiplier, written beside ``folder`` and renamed
    into place."""
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    backend.save_pretrained(str(staging))
    if result.primal_dual is not None:
        save_dual_state(result.primal_dual, staging, step)
    if folder.exists():
        shutil.rmtree(folder)
    staging.rename(folder)
