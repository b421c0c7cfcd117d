"""``constrained-align compare``: several algorithms, one model, one cost limit, one report.

Stages, each cached in the output folder so an interrupted comparison resumes where it stopped:

1. **scorers** — the reward and cost models: trained once on the embedded data and kept in the
   user cache (``$CONSTRAINED_ALIGN_CACHE``, else ``~/.cache/constrained-align``) under a hash
   of their settings, the embedded data and the library version, so later comparisons reuse
   them; or random tiny ones (``backbone: tiny``).
2. **train/<key>** — each registry key trained by ``train_lm`` from its base preset with the
   comparison's shared sections, scorers, seed and cost limit, and its budget. A finished run
   has ``summary.json``; an interrupted one resumes from its last checkpoint (bit-identically).
3. **eval/<name>** — every model, and the reference, on the same held-out prompts
   (:mod:`constrained_align.eval.policy_eval`), written to ``eval/<name>.json``.
4. **report** — ``results.json``, ``report.md`` and the plots
   (:mod:`constrained_align.eval.report`).

The base model is loaded once per process (:class:`~constrained_align.models.policy.ModelPool`)
and the samples and scores cache is shared by the runs, so reference samples drawn for one key
serve the others.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from constrained_align import algorithms
from constrained_align.config import (
    ConfigError,
    RunConfig,
    ScorerConfig,
    apply_overrides,
    dump_yaml,
    from_dict,
    load_yaml,
    to_dict,
)
from constrained_align.config.compare import CompareConfig, PolicyEvalConfig
from constrained_align.eval.policy_eval import EvalPrompts, evaluate_policy, load_eval_prompts
from constrained_align.eval.report import write_report
from constrained_align.models.policy import ModelPool
from constrained_align.testbed.runner import load_run_config
from constrained_align.trainers.checkpoint import latest_checkpoint
from constrained_align.trainers.lm_run import train_lm
from constrained_align.trainers.lm_setup import (
    build_policy,
    build_scorer,
    build_task,
    load_trained_policy,
)
from constrained_align.trainers.scorer import load_scorer_data, train_scorer
from constrained_align.utils import json_safe, write_json, write_text
from constrained_align.utils.cache import DiskCache, content_key

PRESETS = Path(__file__).resolve().parent / "compare_presets"
REFERENCE = "reference"
Say = Callable[[str], None]


def compare_preset_path(spec: str) -> Path:
    """``default`` / ``tiny`` (shipped presets) or a YAML path."""
    path = Path(spec)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"compare config not found: {path}")
        return path
    found = PRESETS / f"{spec}.yaml"
    if not found.is_file():
        names = sorted(p.stem for p in PRESETS.glob("*.yaml"))
        raise ConfigError(f"no compare preset '{spec}'; available: {', '.join(names)}")
    return found


def load_compare_config(spec: str, overrides: list[str] | None = None) -> CompareConfig:
    """A :class:`CompareConfig` from a preset or YAML file, with ``--set`` items applied."""
    path = compare_preset_path(spec)
    config = from_dict(CompareConfig, load_yaml(path), source=str(path))
    if overrides:
        apply_overrides(config, overrides)
    for key in config.algorithms:
        if key != REFERENCE:
            algorithms.get(key)  # unknown keys fail here, with the known ones listed
    if len(set(config.algorithms)) != len(config.algorithms):
        raise ConfigError(f"algorithms: each key once, got {config.algorithms}")
    return config


def user_cache_dir() -> Path:
    """Where trained comparison scorers are kept between runs."""
    root = os.environ.get("CONSTRAINED_ALIGN_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "constrained-align"


def ensure_scorers(config: CompareConfig, say: Say, progress: bool) -> dict[str, Any]:
    """Paths of the reward and cost models (training them on first use, unless the plan names
    saved ones), with how long the training took and whether this comparison reused them."""
    plan = config.scorers
    if plan.backbone == "tiny":
        tiny = {"path": "tiny", "cached": True, "seconds": 0.0}
        return {kind: dict(tiny) for kind in ("reward", "cost")}
    from constrained_align import __version__

    out = {}
    for kind in ("reward", "cost"):
        given = getattr(plan, kind)
        if given is not None:
            out[kind] = {"path": str(given), "cached": True, "given": True, "seconds": 0.0}
            continue
        settings = ScorerConfig(kind=kind, backbone=plan.backbone, seed=config.seed)
        apply_overrides(settings, list(plan.overrides))
        folder = user_cache_dir() / "scorers" / content_key(to_dict(settings), __version__)[:16]
        cached = (folder / "summary.json").is_file()
        if not cached:
            say(f"training the {kind} model ({plan.backbone}) → {folder}")
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
    config: CompareConfig, scorers: dict[str, Any], out: Path, pool: ModelPool
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
    backend = build_policy(run, cache, pool=pool)
    task = build_task(run, backend)
    samples = backend.sample(task.prompts(0), task.reference_samples, reference=True)
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
    key: str, config: CompareConfig, scorers: dict[str, Any], out: Path, cost_limit: float
) -> RunConfig:
    """The run config of ``key``: its base preset, the shared sections, then the comparison's
    seed, scorers, cache folder, cost limit (keys with a multiplier) and the key's budget."""
    preset = config.presets.get(key, f"{key}:tiny")
    sets = [
        f"seed={config.seed}",
        f"reward={scorers['reward']['path']}",
        f"cost={scorers['cost']['path']}",
        f"cache_dir={out / 'cache'}",
    ]
    if algorithms.get(key).has_multiplier:
        sets.append(f"cost_limit={cost_limit}")
    run = load_run_config(preset, merge=config.run)
    apply_overrides(run, sets + list(config.budgets.get(key, [])))
    if run.backend != "causal_lm":
        raise ConfigError(f"compare: preset {preset} is not a causal-LM run")
    return run


def train_stage(key: str, run: RunConfig, folder: Path, pool: ModelPool) -> dict[str, Any]:
    """Train ``key`` into ``folder`` (resuming an interrupted run); the run's summary."""
    done = folder / "summary.json"
    if done.is_file():
        return json.loads(done.read_text())
    resume = latest_checkpoint(folder / "checkpoints") is not None
    if not resume:
        shutil.rmtree(folder, ignore_errors=True)
    return train_lm(run, folder, resume=resume, pool=pool)


def eval_stage(
    name: str,
    run: RunConfig,
    config: CompareConfig,
    out: Path,
    pool: ModelPool,
    scorer: Any,
    prompts: EvalPrompts,
    progress: bool = False,
) -> dict[str, Any]:
    """Evaluate the model ``name`` (``reference`` = the untrained base); cached as JSON."""
    target = out / "eval" / f"{name}.json"
    if target.is_file():
        return json.loads(target.read_text())
    cache = scorer.cache
    if name == REFERENCE:
        backend = build_policy(run, cache, pool=pool)
    else:
        backend = load_trained_policy(run, out / "runs" / name / "final", cache, pool)
    result = evaluate_policy(
        backend,
        scorer,
        prompts,
        config.eval,
        reference=name == REFERENCE,
        progress=progress,
        desc=f"evaluating {name}",
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
    say: Say = print,
) -> dict[str, Any]:
    """Run every stage (skipping finished ones) and write the report; returns results.json."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    _check_same_comparison(out, config)
    started = time.perf_counter()
    stages: dict[str, float] = {}
    scorers = ensure_scorers(config, say, progress)
    stages["scorers"] = sum(s["seconds"] for s in scorers.values() if not s["cached"])
    keys = [k for k in config.algorithms if k != REFERENCE]
    pool = ModelPool()
    calibration = None
    if config.cost_limit is None:
        say("calibrating the cost limit on the reference's samples")
        calibration = calibrate_cost_limit(config, scorers, out, pool)
    limit = config.cost_limit if calibration is None else calibration["cost_limit"]
    runs = {k: run_config(k, config, scorers, out, limit) for k in keys}
    if not progress:
        for run in runs.values():
            run.output.progress = False
    summaries = {}
    for i, key in enumerate(keys, 1):
        say(f"[{i}/{len(keys)}] training {key}")
        summaries[key] = train_stage(key, runs[key], out / "runs" / key, pool)
        stages[f"train/{key}"] = summaries[key]["wall_seconds"]
    any_run = runs[keys[0]] if keys else run_config("dpo", config, scorers, out, limit)
    scorer = build_scorer(any_run, DiskCache(out / "cache"), progress=False)
    evals = {}
    prompts = load_eval_prompts(config.eval)  # the same held-out prompts for every model
    for i, name in enumerate(config.algorithms, 1):
        say(f"[{i}/{len(config.algorithms)}] evaluating {name}")
        run = runs.get(name, any_run)
        evals[name] = eval_stage(name, run, config, out, pool, scorer, prompts, progress)
        stages[f"eval/{name}"] = sum(m["seconds"] for m in evals[name]["eval"].values())
    results = write_report(
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
    )
    return results


def _check_same_comparison(out: Path, config: CompareConfig) -> None:
    """A folder holds one comparison: rerunning with other settings would mix cached stages."""
    saved = out / "compare.yaml"
    text = dump_yaml(config, with_docs=False)
    if saved.is_file() and saved.read_text() != text:
        raise ConfigError(
            f"{out} holds a comparison with other settings (see {saved}); "
            "use another --output-dir or remove that folder"
        )
    write_text(saved, text)


def evaluate_run(
    folder: Path, overrides: list[str], *, output: str | None = None, reference: bool = False
) -> dict[str, Any]:
    """``constrained-align eval --model DIR``: evaluate a ``train`` run folder's final policy
    (or its reference) with :class:`PolicyEvalConfig` defaults and ``overrides``; the result
    is written to ``output`` (default ``DIR/eval.json``) and returned with its ``path``."""
    config_file = folder / "config.yaml"
    if not config_file.is_file() or not (folder / "final").is_dir():
        raise ConfigError(f"--model {folder}: not a finished `train` run (config.yaml, final/)")
    run = load_run_config(str(config_file))
    settings = apply_overrides(PolicyEvalConfig(), list(overrides))
    cache_dir = Path(run.output.cache_dir) if run.output.cache_dir else folder / "cache"
    cache = DiskCache(cache_dir) if run.output.disk_cache else None
    if reference:
        backend = build_policy(run, cache)
    else:
        backend = load_trained_policy(run, folder / "final", cache)
    prompts = load_eval_prompts(settings)
    result = evaluate_policy(
        backend, build_scorer(run, cache, progress=False), prompts, settings, reference=reference
    )
    dual = folder / "final" / "primal_dual.json"
    result.update(
        {
            "model": str(folder),
            "reference": reference,
            "prompts": prompts.sizes(),
            "settings": to_dict(settings),
            "primal_dual": json.loads(dual.read_text()) if dual.is_file() else None,
        }
    )
    path = Path(output) if output else folder / "eval.json"
    write_json(path, json_safe(result))
    return {**result, "path": str(path)}
