"""``ppo_step``: one ``ppo_lag`` step on the LM (8 rollouts × 48 tokens, two critics) with the
library's own runner, against the same step with every fast path switched off.

The run is ``train_lm`` on the ``ppo_lag:smollm2`` preset (4 prompts × 2 samples per step) for
``repeats + 1`` steps, the first being the warm-up; no held-out evaluation, no KL prompts, no
disk cache and no checkpoints (``save_every_epochs=0``: checkpoint I/O is not part of a step).
Each step's wall time is the time between consecutive ``metrics.jsonl`` records (the run log's
calls are timestamped); its split comes from the record's ``time/generation``,
``time/scoring`` and ``time/training``, and log-probs and values (the rollout's policy and
reference log-probs and the critics' old values) are the wall time minus those three. The
plain side is the same run with ``--set fast_paths=false``; a config without that field
skips it with a note. Unit: seconds per step (lower is better), median over the timed steps;
the split reported is that of the median step (its parts add up to it).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks.common import (
    SEED,
    Bench,
    CaseResult,
    bound_share,
    median,
)
from benchmarks.flops import (
    decode_gemms,
    forward_gemms,
    input_grad_gemms,
    logprob_gemms,
    lora_train_gemms,
    model_dims,
    total_flops,
)

#: Seconds per ppo_lag step measured on this project's machine before the speed-up work.
BEFORE_SECONDS = 41.0
PARTS = ("generation", "logprobs_values", "scoring", "training")
#: The parts the run log times itself (``time/<part>`` in each record).
LOGGED = ("generation", "scoring", "training")


def _score_models(bench: Bench) -> tuple[str, str]:
    """The reward and cost model of the run: ``tiny`` in quick mode, else fresh MiniLM score
    models (random heads: timing does not need trained ones) saved in the work folder."""
    if bench.settings.quick:
        return "tiny", "tiny"
    from constrained_align.scoring import ScoreModel

    paths = []
    for kind in ("reward", "cost"):
        path = bench.settings.workdir / f"{kind}-model"
        if not path.exists():
            ScoreModel.from_backbone("minilm", kind, max_length=128).save_pretrained(path)
        paths.append(str(path))
    return paths[0], paths[1]


def _config(bench: Bench, *extra: str) -> Any:
    """The run config of the step (``extra``: more ``--set`` items)."""
    from constrained_align.algorithms import load_run_config

    reward, cost = _score_models(bench)
    return load_run_config(
        "ppo_lag:smollm2",
        [
            f"steps={bench.settings.repeats + 1}",
            f"reward={reward}",
            f"cost={cost}",
            "eval_prompts=0",
            "kl_prompts=0",
            "progress=false",
            "disk_cache=false",
            "save_every_epochs=0",
            f"policy={bench.settings.policy}",
            f"seed={SEED}",
            *extra,
        ],
    )


@contextmanager
def _instrumented() -> Iterator[dict[str, list]]:
    """While a run trains: the time of each logged record, and each sample's real tokens,
    response tokens and rows (the rollouts: held-out evaluation and KL prompts are off)."""
    from constrained_align.backends.causal_lm import CausalLMPolicy
    from constrained_align.runner import log

    seen: dict[str, list] = {"stamps": [], "rollouts": []}
    record_call, sample = log.RunLog.__call__, CausalLMPolicy.sample

    def stamped(self: Any, record: dict[str, Any]) -> None:
        seen["stamps"].append(time.perf_counter())
        record_call(self, record)

    def sized(self: Any, *args: Any, **kwargs: Any) -> Any:
        samples = sample(self, *args, **kwargs)
        seqs = samples.sequences
        sizes = (int(seqs.attention_mask.sum()), int(seqs.response_mask.sum()), len(seqs))
        seen["rollouts"].append(sizes)
        return samples

    log.RunLog.__call__, CausalLMPolicy.sample = stamped, sized
    try:
        yield seen
    finally:
        log.RunLog.__call__, CausalLMPolicy.sample = record_call, sample


def _run(bench: Bench, config: Any, out: Path) -> dict[str, Any]:
    """Train ``config`` in ``out``; per timed step: wall time, its split and rollout sizes."""
    from constrained_align.runner.train import train_lm

    with _instrumented() as seen:
        train_lm(config, out, pool=bench.pool)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    stamps = seen["stamps"]
    steps: dict[str, list[float]] = {k: [] for k in ("wall", *PARTS)}
    for k in range(1, len(records)):  # record 0 closes the warm-up step
        wall = stamps[k] - stamps[k - 1]
        timed = {part: float(records[k][f"time/{part}"]) for part in LOGGED}
        steps["wall"].append(wall)
        steps["logprobs_values"].append(wall - sum(timed.values()))
        for part, seconds in timed.items():
            steps[part].append(seconds)
    return {"steps": steps, "rollouts": seen["rollouts"][1:]}


def _bound_seconds(
    bench: Bench, config: Any, rollouts: list[tuple[int, int, int]]
) -> tuple[float, float, float, float]:
    """The GEMM-bound seconds of a mean timed step, its FLOP, real tokens and response tokens.

    Per step of B rows, P prompt and R response tokens (S = P + R real tokens): sampling
    (prefill 2·N·P, decode (2·N + 2·H·V)·R at M = B); the policy's and the reference's
    log-probs (2 × (2·N·S + 2·H·V·R)); two critics' old values (2 × 2·N·S); then each PPO
    pass, the policy's LoRA forward+backward (4·N·S + 6·H·V·R) and each critic's (4·N·S).
    The score models' passes (two small encoders over 8 texts) are left out.
    """
    n = len(rollouts)
    tokens, response, rows = (sum(r[i] for r in rollouts) / n for i in range(3))
    dims = model_dims(bench.base_model()[0])
    passes = config.train.update_iters
    gemms = [
        *decode_gemms(dims, rows, tokens - response, response, 1),
        *logprob_gemms(dims, tokens, response, 2),
        *forward_gemms(dims, tokens, 2),
        *lora_train_gemms(dims, tokens, response, passes),
        *forward_gemms(dims, tokens, 2 * passes),
        *input_grad_gemms(dims, tokens, 2 * passes),
    ]
    flops = total_flops(gemms)
    return flops / bench.meter.weighted_rate(gemms), flops, tokens, response


def _split(steps: dict[str, list[float]]) -> dict[str, float]:
    """The median step's wall time and its parts (which add up to it; the lower middle step
    when the count is even)."""
    walls = steps["wall"]
    middle = sorted(range(len(walls)), key=walls.__getitem__)[(len(walls) - 1) // 2]
    return {k: v[middle] for k, v in steps.items()}


def ppo_step(bench: Bench) -> CaseResult:
    """Seconds per ppo_lag step: ours against the plain path (fast paths off)."""
    from constrained_align.config import ConfigError

    config = _config(bench)
    ours = _run(bench, config, bench.settings.workdir / "ppo-ours")
    try:
        plain_config = _config(bench, "fast_paths=false")
    except ConfigError as err:
        plain, note = None, f"plain side skipped: the config has no fast_paths field ({err})"
    else:
        plain, note = _run(bench, plain_config, bench.settings.workdir / "ppo-plain"), None
    bound, flops, tokens, response = _bound_seconds(bench, config, ours["rollouts"])
    ours_wall = median(ours["steps"]["wall"])
    peer = median(plain["steps"]["wall"]) if plain else None
    details: dict[str, Any] = {
        "step_time_from": "consecutive metrics.jsonl records (timestamped RunLog calls)",
        "timed_steps": len(ours["steps"]["wall"]),
        "speedup_vs_41s_before": BEFORE_SECONDS / ours_wall,
        "bound_seconds": bound,
        "flop_per_step": flops,
        "rollout_tokens": tokens,
        "rollout_response_tokens": response,
        "split_ours": _split(ours["steps"]),
    }
    if plain:
        details["split_plain"] = _split(plain["steps"])
    if note:
        details["note"] = note
    return CaseResult(
        name="ppo_step",
        ours=ours_wall,
        peer=peer,
        unit="s/step",
        higher_is_better=False,
        share_ours=bound_share(ours_wall, bound, False),
        share_peer=bound_share(peer, bound, False),
        details=details,
    )
