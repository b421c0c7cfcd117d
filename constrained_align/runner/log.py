"""The run's log: ``ctx.log`` of every training run.

Each record an algorithm logs gets the KL estimate (seeded samples of the policy on a few
training prompts, :func:`~constrained_align.eval.policy.sequence_kl`), λ when the algorithm
has a multiplier, and the seconds spent generating, scoring and training since the previous
record; it is written to ``metrics.jsonl`` at once, drives the progress bar and may trigger a
checkpoint. While a resumed run replays, the saved records are restored instead, and at the
last of them the sampling generators, the multiplier and the RNG are set to what the
checkpoint saved (:mod:`.replay`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from constrained_align.algorithms import RunContext
from constrained_align.backends.causal_lm import PromptBatch
from constrained_align.config import LMRunConfig
from constrained_align.eval.policy import sequence_kl
from constrained_align.runner.checkpoint import Checkpointer, set_rng_state
from constrained_align.runner.replay import Replay, RunBackend, total_timers
from constrained_align.utils import json_safe

KL_SEED_OFFSET = 104729


class RunLog:
    """``ctx.log``: writes metrics.jsonl, adds the KL estimate, checkpoints, drives the bar.

    Args:
        out: the run folder.
        backend: the run's policy backend (its forks are found through it).
        ctx: the run context (its multiplier, reductions and scorer).
        config: the run config.
        replay: a resumed run's saved records and checkpoint state (None: a fresh run).
    """

    def __init__(
        self,
        out: Path,
        backend: RunBackend,
        ctx: RunContext,
        config: LMRunConfig,
        replay: tuple[Replay, dict[str, Any]] | None = None,
    ) -> None:
        self.path = out / "metrics.jsonl"
        self.backend = backend
        self.ctx = ctx
        self.config = config
        self.records: list[dict[str, Any]] = []
        self.last_totals: dict[str, float] = {}
        self.replay, self.saved = replay if replay is not None else (None, None)
        o = config.output
        self.checkpoints = Checkpointer(
            out / "checkpoints",
            backend,
            every=o.save_every_epochs,
            keep=o.keep_checkpoints,
            dist=ctx.dist,
        )
        self.kl_prompts = _first_prompts(ctx, o.kl_prompts)
        show = config.output.progress and ctx.dist.is_main
        self.bar = tqdm(desc="training", unit="step", disable=not show, leave=False)

    def __call__(self, record: dict[str, Any]) -> None:
        index = len(self.records)
        if self.saved is not None and index < len(self.saved["records"]):
            # Replaying: the saved record is the truth.
            record.clear()
            record.update(self.saved["records"][index])
            self.records.append(record)
            if index == len(self.saved["records"]) - 1:
                self._end_replay()
            return
        if self.kl_prompts is not None:
            record["kl"] = self._kl(seed=self.config.seed + KL_SEED_OFFSET + index)
        if self.ctx.primal_dual is not None and "dual/lambda" not in record:
            record["dual/lambda"] = self.ctx.primal_dual.lam()
        record.update(self._timings())
        self.records.append(record)
        if self.ctx.dist.is_main:
            with self.path.open("a") as f:
                f.write(json.dumps(json_safe(record), allow_nan=False) + "\n")
        self.bar.set_postfix_str(_postfix(record), refresh=False)
        self.checkpoints.maybe_save(self.records, self.ctx.primal_dual)

    def _kl(self, seed: int) -> float:
        """Monte-Carlo KL(π‖π_ref) on one seeded sample per KL prompt (each data-parallel
        process samples its share of the prompts)."""
        dist, prompts = self.ctx.dist, self.kl_prompts
        mine = prompts.take(dist.shard(range(len(prompts))))
        with self.backend.unsharded():
            samples = self.backend.sample(mine, 1, seed=seed)
        return float(dist.gather(sequence_kl(self.backend, samples.sequences)).mean())

    def totals(self) -> dict[str, float]:
        """Seconds generating, scoring and in optimizer steps, and tokens generated, so far
        in this process (the policy and its forks together)."""
        totals = total_timers(self.backend)
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

    def close(self) -> None:
        """Close the progress bar (it clears its line; closing twice is harmless)."""
        self.bar.close()

    def _end_replay(self) -> None:
        """At the checkpoint's record: restore what was saved with it and check λ."""
        assert self.replay is not None and self.saved is not None
        self.replay.finish(self.backend.tree())
        set_rng_state(self.saved["rng"])
        self._timings()  # the next record's timings start here, not at the process start
        saved, pd = self.saved["primal_dual"], self.ctx.primal_dual
        if saved is not None and pd is not None:
            lam = pd.lam()
            pd.load_state_dict(saved)
            if abs(lam - pd.lam()) > 1e-6 * max(1.0, abs(pd.lam())):
                raise RuntimeError(
                    f"resume replay reached λ = {lam:.6g} but the checkpoint holds "
                    f"{pd.lam():.6g}; the run's inputs changed since it was saved"
                )


def _first_prompts(ctx: RunContext, count: int) -> PromptBatch | None:
    """The first ``count`` prompts of the task's first step (the KL estimate's prompts)."""
    if count <= 0:
        return None
    batch = ctx.task.prompts(0)
    return batch.take(range(min(count, len(batch))))


def _postfix(record: dict[str, Any]) -> str:
    keys = ("stage", "loss/policy", "dual/lambda", "kl")
    parts = []
    for key in keys:
        if key in record:
            value = record[key]
            parts.append(f"{key.split('/')[-1]}={value:.4g}" if isinstance(value, float) else value)
    return " ".join(str(p) for p in parts)
