"""``constrained-align compare``: several algorithms, one model, one cost limit, one report.

Stages, each cached in the output folder so an interrupted comparison resumes where it stopped:

1. **scorers** — the reward and cost models: saved ones, ``tiny`` ones, or (null) trained once
   on the embedded data with ``scorer_training`` and kept in the user cache
   (``$CONSTRAINED_ALIGN_CACHE``, else ``~/.cache/constrained-align``) under a hash of their
   settings and the library version, so later comparisons reuse them.
2. **cost limit** — one number for every key with a multiplier, calibrated on the reference's
   samples unless the config fixes it (``cost_limit.json``).
3. **runs/<key>** — each registry key trained by ``train_lm`` from its base preset with the
   comparison's shared sections, budget, scorers, seed and cost limit. A finished run has
   ``summary.json``; an interrupted one resumes from its last checkpoint (bit-identically).
4. **eval/<name>** — every model, and the reference, on the same held-out prompts
   (:mod:`constrained_align.eval.policy`), scored by the proxy models and by the ``judges``
   (evaluation-only models no key trained against; null = the proxy judges), with per-prompt
   records, written to ``eval/<name>.json``.
5. **report** — ``results.json``, ``report.md`` and the plots, every figure with its bootstrap
   interval and paired differences (:mod:`constrained_align.eval.report`).

The base model is loaded once per process (``ModelPool``) and the samples and scores cache is
shared by the runs, so reference samples drawn for one key serve the others.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from constrained_align import algorithms
from constrained_align.algorithms import load_run_config
from constrained_align.backends.causal_lm.loading import ModelPool
from constrained_align.config import (
    COMPARE,
    CompareConfig,
    ConfigError,
    LMRunConfig,
    apply_overrides,
    dump_yaml,
    from_dict,
    load_yaml,
    merge_mappings,
    preset_path,
    to_dict,
)
from constrained_align.eval.policy import EvalPrompts, evaluate_policy, load_eval_prompts
from constrained_align.eval.report import write_report
from constrained_align.runner.build import (
    build_policy,
    build_scorer,
    build_task,
    load_trained_policy,
)
from constrained_align.runner.checkpoint import latest_checkpoint
from constrained_align.runner.folder import RunFolder
from constrained_align.runner.replay import RunBackend
from constrained_align.runner.train import train_lm
from constrained_align.scoring import SequenceScorer
from constrained_align.scoring.loading import load_scorer
from constrained_align.scoring.training import load_scorer_data, train_scorer
from constrained_align.utils import write_json, write_text
from constrained_align.utils.cache import DiskCache, content_key, user_cache_dir

REFERENCE = "reference"
#: What a comparison writes in its folder (the only entries --overwrite removes).
COMPARE_ENTRIES = (
    "compare.yaml",
    "cost_limit.json",
    "runs",
    "eval",
    "cache",
    "plots",
    "report.md",
    "results.json",
)
Say = Callable[[str], None]


def load_compare_config(spec: str, overrides: list[str] | None = None) -> CompareConfig:
    """A :class:`CompareConfig` from a preset (``default``, ``tiny``) or YAML file, with
    ``--set`` items applied; the keys, the shared ``run`` sections and every key's budget are
    checked against the key's run config here, before anything trains."""
    named = spec if spec.endswith((".yaml", ".yml")) or ":" in spec else f"{COMPARE}:{spec}"
    path = preset_path(named)
    config = from_dict(CompareConfig, load_yaml(path), source=str(path))
    if overrides:
        apply_overrides(config, overrides)
    if len(set(config.algorithms)) != len(config.algorithms):
        raise ConfigError(f"algorithms: each key once, got {config.algorithms}")
    for key in config.algorithms:
        if key != REFERENCE:
            run_config(key, config, {"reward": "tiny", "cost": "tiny"}, Path("."), 0.0)
    unknown = sorted(set(config.budgets) - set(config.algorithms))
    if unknown:
        raise ConfigError(f"budgets: {unknown} are not among the algorithms compared")
    return config


def ensure_scorers(config: CompareConfig, say: Say, progress: bool) -> dict[str, Any]:
    """Paths of the reward and cost models (training the null ones on first use), with how
    long the training took and whether this comparison reused them."""
    from constrained_align import __version__

    out = {}
    for kind in ("reward", "cost"):
        given = getattr(config.scorers, kind)
        if given is not None:
            out[kind] = {"path": str(given), "cached": True, "given": True, "seconds": 0.0}
            continue
        settings = from_dict(type(config.scorer_training), to_dict(config.scorer_training))
        settings.kind = kind
        folder = user_cache_dir() / "scorers" / content_key(to_dict(settings), __version__)[:16]
        cached = (folder / "summary.json").is_file()
        if not cached:
            say(f"training the {kind} model ({settings.backbone}) → {folder}")
            staging = folder.with_name(folder.name + ".partial")
            shutil.rmtree(staging, ignore_errors=True)
            train_scorer(settings, load_scorer_data(settings), staging, progress=progress)
            shutil.rmtree(folder, ignore_errors=True)
            staging.rename(folder)
        summary = json.loads((folder / "summary.json").read_text())
        out[kind] = {
            "path": str(folder / "model"),
            "cached": cached,
            "seconds": summary["wall_seconds"],
            "validation": summary.get("validation"),
        }
    return out


def calibrate_cost_limit(
    config: CompareConfig, scorers: dict[str, str], out: Path, pool: ModelPool
) -> dict[str, Any]:
    """The cost limit d = m_min + f·(m − m_min) from the reference's samples of the training
    prompts: the samples the one-shot duals (mocan, c_dpo's warm start) draw first, with the
    same prompts, count and seed, so they come from the shared cache and their dual is bounded
    at this d. Cached in ``cost_limit.json``."""
    target = out / "cost_limit.json"
    if target.is_file():
        return json.loads(target.read_text())
    run = run_config("mocan", config, scorers, out, 0.0)
    cache = DiskCache(out / "cache")
    inner = build_policy(run, pool=pool)
    task = build_task(run, inner)
    samples = RunBackend(inner, cache=cache).sample(
        task.prompts(0), task.reference_samples, reference=True
    )
    cost = build_scorer(run, cache, progress=False).cost(samples.sequences).double()
    per_prompt = cost.view(-1, task.reference_samples)  # prompt-major
    mean, mean_min = float(per_prompt.mean()), float(per_prompt.min(-1).values.mean())
    f = config.cost_limit_fraction
    result = {
        "cost_limit": mean_min + f * (mean - mean_min),
        "reference_mean_cost": mean,
        "reference_mean_smallest_cost": mean_min,
        "fraction": f,
        "prompts": per_prompt.shape[0],
        "samples_per_prompt": per_prompt.shape[1],
    }
    write_json(target, result)
    return result


def run_config(
    key: str, config: CompareConfig, scorers: dict[str, str], out: Path, cost_limit: float
) -> LMRunConfig:
    """The run config of ``key``: its base preset, the shared sections and the key's budget,
    then the comparison's seed, scorers (kind → path), cache folder and cost limit (keys with
    a multiplier)."""
    preset = config.presets.get(key, f"{key}:tiny")
    merged = merge_mappings(config.run, config.budgets.get(key, {}))
    sets = {
        "seed": config.seed,
        "scorers.reward": scorers["reward"],
        "scorers.cost": scorers["cost"],
        "output.cache_dir": str(out / "cache"),
    }
    if algorithms.get(key).has_multiplier:
        sets["train.dual.cost_limit"] = cost_limit
    run = load_run_config(preset, sets, merge=merged)
    if not isinstance(run, LMRunConfig):
        raise ConfigError(f"compare: preset {preset} is not a causal-LM run")
    return run


def build_judges(
    config: CompareConfig, proxies: dict[str, str], cache: DiskCache
) -> tuple[SequenceScorer | None, dict[str, Any]]:
    """The judge models (None when both are the proxies) and what the report says of them:
    ``{reward: spec, cost: spec, independent: {kind: bool}}`` — a judge is independent when
    it is named and is not the proxy of its kind."""
    specs = {k: getattr(config.judges, k) or proxies[k] for k in ("reward", "cost")}
    free = {k: getattr(config.judges, k) not in (None, proxies[k]) for k in specs}
    info = {**specs, "independent": free}
    if not any(free.values()):
        return None, info
    size = config.judges.scorer_batch_size
    judge = SequenceScorer(
        load_scorer(specs["reward"], "reward", batch_size=size, progress=False, judge=True),
        load_scorer(specs["cost"], "cost", batch_size=size, progress=False, judge=True),
        cache=cache,
    )
    return judge, info


def train_stage(key: str, run: LMRunConfig, folder: Path, pool: ModelPool) -> dict[str, Any]:
    """Train ``key`` into ``folder`` (resuming an interrupted run); the run's summary."""
    done = folder / "summary.json"
    if done.is_file():
        return json.loads(done.read_text())
    resume = latest_checkpoint(folder / "checkpoints") is not None
    return train_lm(run, folder, resume=resume, overwrite=not resume, pool=pool)


def eval_stage(
    name: str,
    run: LMRunConfig,
    config: CompareConfig,
    out: Path,
    pool: ModelPool,
    scorer: SequenceScorer,
    prompts: EvalPrompts,
    progress: bool = False,
    judge: SequenceScorer | None = None,
) -> dict[str, Any]:
    """Evaluate the model ``name`` (``reference`` = the untrained base), judged by ``judge``
    beside the proxy ``scorer``; cached as JSON."""
    target = out / "eval" / f"{name}.json"
    if target.is_file():
        return json.loads(target.read_text())
    if name == REFERENCE:
        backend = build_policy(run, pool=pool)
    else:
        backend = load_trained_policy(run, out / "runs" / name / "final", pool)
    result = evaluate_policy(
        backend,
        scorer,
        prompts,
        config.eval,
        reference=name == REFERENCE,
        progress=progress,
        desc=f"evaluating {name}",
        judge=judge,
    )
    result["prompts"] = prompts.sizes()
    write_json(target, result)
    return result


def compare(
    config: CompareConfig,
    output_dir: str | Path,
    *,
    preset: str = "",
    progress: bool = True,
    overwrite: bool = False,
    say: Say = print,
) -> dict[str, Any]:
    """Run every stage (skipping finished ones) and write the report; returns results.json.

    The folder holds one comparison: the same settings continue it where it stopped, other
    settings are refused unless ``overwrite`` (which removes what the comparison wrote there).
    """
    out = Path(output_dir)
    with claim(out, config, overwrite=overwrite, say=say):
        return _stages(config, out, preset=preset, progress=progress, say=say)


def claim(out: Path, config: CompareConfig, *, overwrite: bool, say: Say) -> RunFolder:
    """The comparison's folder, locked; ``compare.yaml`` written when it starts."""
    text = dump_yaml(config, with_docs=False)
    folder = RunFolder(
        out, kind="compare", identity=content_key(text), entries=COMPARE_ENTRIES, say=say
    )
    manifest = folder.manifest() if out.is_dir() else None
    same = manifest is not None and manifest.get("identity") == folder.identity
    mode = "overwrite" if overwrite else "resume" if same else "new"
    folder.claim(mode, started=lambda: True)
    write_text(out / "compare.yaml", text)
    return folder


def _stages(
    config: CompareConfig, out: Path, *, preset: str, progress: bool, say: Say
) -> dict[str, Any]:
    started = time.perf_counter()
    stages: dict[str, float] = {}
    scorers = ensure_scorers(config, say, progress)
    stages["scorers"] = sum(s["seconds"] for s in scorers.values() if not s["cached"])
    keys = [k for k in config.algorithms if k != REFERENCE]
    pool = ModelPool()
    paths = {kind: s["path"] for kind, s in scorers.items()}
    calibration = None
    if config.cost_limit is None:
        say("calibrating the cost limit on the reference's samples")
        calibration = calibrate_cost_limit(config, paths, out, pool)
    limit = config.cost_limit if calibration is None else calibration["cost_limit"]
    runs = {k: run_config(k, config, paths, out, limit) for k in keys}
    for run in runs.values():
        run.output.progress = run.output.progress and progress
    summaries = {}
    for i, key in enumerate(keys, 1):
        say(f"[{i}/{len(keys)}] training {key}")
        summaries[key] = train_stage(key, runs[key], out / "runs" / key, pool)
        stages[f"train/{key}"] = summaries[key]["wall_seconds"]
    any_run = runs[keys[0]] if keys else run_config("dpo", config, paths, out, limit)
    scorer = build_scorer(any_run, DiskCache(out / "cache"), progress=False)
    judge, judges = build_judges(config, paths, DiskCache(out / "cache"))
    evals = {}
    prompts = load_eval_prompts(config.eval)  # the same held-out prompts for every model
    for i, name in enumerate(config.algorithms, 1):
        say(f"[{i}/{len(config.algorithms)}] evaluating {name}")
        run = runs.get(name, any_run)
        evals[name] = eval_stage(name, run, config, out, pool, scorer, prompts, progress, judge)
        stages[f"eval/{name}"] = sum(m["seconds"] for m in evals[name]["eval"].values())
    return write_report(
        out,
        config=config,
        preset=preset,
        scorers=scorers,
        runs={k: to_dict(v) for k, v in runs.items()},
        summaries=summaries,
        evals=evals,
        stages=stages,
        wall_seconds=time.perf_counter() - started,
        cost_limit=limit,
        calibration=calibration,
        judges=judges,
    )
