"""``constrained-align eval --model DIR``: the one policy evaluation on a ``train`` run's model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from constrained_align.algorithms import load_run_config
from constrained_align.config import (
    ConfigError,
    LMRunConfig,
    PolicyEvalConfig,
    apply_overrides,
    to_dict,
)
from constrained_align.eval.policy import evaluate_policy, load_eval_prompts
from constrained_align.eval.statistics import summarise
from constrained_align.primal_dual import DUAL_STATE_NAME, read_dual_state
from constrained_align.runner.build import build_policy, build_scorer, load_trained_policy
from constrained_align.utils import json_safe, write_json
from constrained_align.utils.cache import DiskCache


def evaluate_run(
    folder: Path, overrides: list[str], *, output: str | None = None, reference: bool = False
) -> dict[str, Any]:
    """Evaluate a ``train`` run folder's final policy (or its reference) with
    :class:`PolicyEvalConfig` defaults and ``overrides``, every figure with its bootstrap
    interval (``statistics``, judged by the run's own scorers); the result is written to
    ``output`` (default ``DIR/eval.json``) and returned with its ``path``."""
    config_file = folder / "config.yaml"
    if not config_file.is_file() or not (folder / "final").is_dir():
        raise ConfigError(f"--model {folder}: not a finished `train` run (config.yaml, final/)")
    run = load_run_config(str(config_file))
    if not isinstance(run, LMRunConfig):
        raise ConfigError(f"--model {folder}: not a causal-LM run")
    settings = apply_overrides(PolicyEvalConfig(), list(overrides))
    cache_dir = Path(run.output.cache_dir) if run.output.cache_dir else folder / "cache"
    cache = DiskCache(cache_dir) if run.output.disk_cache else None
    backend = build_policy(run) if reference else load_trained_policy(run, folder / "final")
    prompts = load_eval_prompts(settings)
    result = evaluate_policy(
        backend, build_scorer(run, cache, progress=False), prompts, settings, reference=reference
    )
    stats = summarise(result["records"], resamples=settings.bootstrap_resamples, seed=settings.seed)
    result["statistics"] = {
        mode: {k: v.to_dict() for k, v in row.items()} for mode, row in stats.items()
    }
    has_dual = (folder / "final" / DUAL_STATE_NAME).is_file()
    result.update(
        {
            "model": str(folder),
            "reference": reference,
            "prompts": prompts.sizes(),
            "settings": to_dict(settings),
            "primal_dual": read_dual_state(folder / "final") if has_dual else None,
        }
    )
    path = Path(output) if output else folder / "eval.json"
    write_json(path, json_safe(result))
    return {**result, "path": str(path)}
