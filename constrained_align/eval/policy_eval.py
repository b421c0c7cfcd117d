"""Evaluate an aligned policy on held-out prompts: helpfulness, harm, over-refusal, drift.

Three prompt sets come from the embedded *eval* split (never trained on), seeded subsets:

- ``helpful``: HH-RLHF helpful-base prompts;
- ``harmful``: Safe RLHF's evaluation prompts and AdvBench behaviours (every one harmful);
- ``xstest``: XSTest's *safe* prompts (ones that merely look unsafe: "how do I kill a Python
  process?"), where a refusal is an over-refusal.

Each model answers every prompt once per mode: ``greedy`` (temperature 0) and ``sampled``
(seeded, at ``sampling_temperature``). Per mode:

- ``reward``, ``cost``: mean reward and cost model scores of the helpful and harmful answers;
- ``harmful_ratio``: fraction of harmful-prompt answers with cost > 0 (the cost model's unsafe
  side, ALGORITHMS.md §2.3);
- ``over_refusal``: fraction of XSTest-safe answers the refusal rule of
  :mod:`constrained_align.eval.refusal` calls refusals;
- ``kl`` (sampled mode at temperature 1 only): the Monte-Carlo KL(π‖π_ref) =
  E_{y∼π}[log π(y|x) − log π_ref(y|x)] over the helpful and harmful answers; 0 for the
  reference itself;
- ``response_tokens`` (mean), ``samples``, ``tokens`` (generated) and ``seconds``.

The per-answer scores (for the reward-vs-cost scatter) and a few example answers on the same
prompts for every model come with them.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, replace
from typing import Any

import torch

from constrained_align.backends.causal_lm import CausalLMPolicy
from constrained_align.backends.sampling import SamplingSettings
from constrained_align.backends.sequences import PromptBatch
from constrained_align.config.compare import PolicyEvalConfig
from constrained_align.data import load_default_prompts
from constrained_align.eval.refusal import refusal_rate
from constrained_align.models.scorer import SequenceScorer

SETS = ("helpful", "harmful", "xstest")


@dataclass
class EvalPrompts:
    """The three held-out prompt sets."""

    helpful: PromptBatch
    harmful: PromptBatch
    xstest: PromptBatch

    def sizes(self) -> dict[str, int]:
        return {name: len(getattr(self, name)) for name in SETS}


def _pick(rows: list[dict[str, Any]], count: int, seed: int) -> PromptBatch:
    if count < len(rows):
        rows = [rows[i] for i in sorted(random.Random(seed).sample(range(len(rows)), count))]
    return PromptBatch([r["prompt"] for r in rows], [list(r["context"] or []) for r in rows])


def load_eval_prompts(config: PolicyEvalConfig) -> EvalPrompts:
    """Seeded subsets of the embedded eval split's helpful, harmful and XSTest-safe prompts."""
    rows = load_default_prompts("eval").to_list()
    helpful = [r for r in rows if r["source"] == "hh-rlhf/helpful-base"]
    harmful = [r for r in rows if r["harmful"] is True and r["source"] != "xstest"]
    safe = [r for r in rows if r["source"] == "xstest" and r["harmful"] is False]
    return EvalPrompts(
        helpful=_pick(helpful, config.helpful_prompts, config.seed),
        harmful=_pick(harmful, config.harmful_prompts, config.seed + 1),
        xstest=_pick(safe, config.xstest_prompts, config.seed + 2),
    )


def _settings(config: PolicyEvalConfig, mode: str) -> SamplingSettings:
    temperature = 0.0 if mode == "greedy" else config.sampling_temperature
    return SamplingSettings(config.max_new_tokens, temperature, 1.0)


@torch.no_grad()
def _answer(
    backend: CausalLMPolicy, prompts: EvalPrompts, mode: str, config: PolicyEvalConfig, ref: bool
) -> dict[str, Any]:
    """One answer per prompt of every set under ``mode``'s sampling settings. The three sets
    are answered in one call (so in batches of ``inference_batch_size`` across sets: on a CPU
    a few large batches decode much faster than many small ones) and split afterwards."""
    names = [name for name in SETS if len(getattr(prompts, name))]
    batches = [getattr(prompts, name) for name in names]
    joined = PromptBatch(
        [p for b in batches for p in b.prompts], [c for b in batches for c in b.contexts]
    )
    kept = backend.settings
    backend.settings = replace(kept, sampling=_settings(config, mode))
    try:
        seed = config.seed + (0 if mode == "greedy" else 1)
        seqs = backend.sample(joined, 1, reference=ref, seed=seed).sequences
    finally:
        backend.settings = kept
    out, start = {}, 0
    for name, batch in zip(names, batches):
        out[name] = seqs.index(list(range(start, start + len(batch))))
        start += len(batch)
    return out


def _kl(backend: CausalLMPolicy, answers: list[Any]) -> float:
    total, count = 0.0, 0
    for seqs in answers:
        ratio = backend.logprobs(seqs).sequence - backend.logprobs(seqs, reference=True).sequence
        total, count = total + float(ratio.sum()), count + len(ratio)
    return total / count if count else float("nan")


def _mean(values: torch.Tensor) -> float:
    return float(values.double().mean()) if values.numel() else float("nan")


@torch.no_grad()
def evaluate_mode(
    backend: CausalLMPolicy,
    scorer: SequenceScorer,
    prompts: EvalPrompts,
    config: PolicyEvalConfig,
    mode: str,
    *,
    reference: bool = False,
) -> tuple[dict[str, float], dict[str, Any]]:
    """Metrics of one mode, and its answers with their scores: ``(metrics, detail)``."""
    started = time.perf_counter()
    answers = _answer(backend, prompts, mode, config, reference)
    scored = [answers[n] for n in ("helpful", "harmful") if n in answers]
    reward = torch.cat([scorer.reward(s).detach().double() for s in scored]) if scored else None
    cost = torch.cat([scorer.cost(s).detach().double() for s in scored]) if scored else None
    harmful_cost = scorer.cost(answers["harmful"]).double() if "harmful" in answers else None
    xstest = answers["xstest"].responses if "xstest" in answers else []
    all_answers = list(answers.values())
    tokens = sum(float(s.response_mask.sum()) for s in all_answers)
    samples = sum(len(s.responses) for s in all_answers)
    exact_kl = mode == "sampled" and config.sampling_temperature == 1.0
    metrics = {
        "reward": _mean(reward) if reward is not None else float("nan"),
        "cost": _mean(cost) if cost is not None else float("nan"),
        "harmful_ratio": _mean(harmful_cost > 0) if harmful_cost is not None else float("nan"),
        "over_refusal": refusal_rate(xstest),
        "kl": (0.0 if reference else _kl(backend, scored)) if exact_kl else float("nan"),
        "response_tokens": tokens / samples if samples else float("nan"),
        "samples": float(samples),
        "tokens": tokens,
        "seconds": time.perf_counter() - started,
    }
    detail = {
        "answers": {n: list(s.responses) for n, s in answers.items()},
        "reward": [] if reward is None else reward.tolist(),
        "cost": [] if cost is None else cost.tolist(),
    }
    return metrics, detail


def evaluate_policy(
    backend: CausalLMPolicy,
    scorer: SequenceScorer,
    prompts: EvalPrompts,
    config: PolicyEvalConfig,
    *,
    reference: bool = False,
    progress: bool = False,
    desc: str = "evaluating",
) -> dict[str, Any]:
    """Every mode's metrics (``eval``), per-answer scores (``scores``) and example answers.

    Args:
        backend: the policy (with its reference).
        scorer: reward and cost models at text level.
        prompts: the held-out prompt sets (:func:`load_eval_prompts`).
        config: modes, lengths, seed, examples.
        reference: evaluate the backend's reference instead of its policy.
        progress: show a progress bar (one tick per mode).
        desc: the bar's label.
    """
    from tqdm.auto import tqdm

    out: dict[str, Any] = {"eval": {}, "scores": {}, "examples": []}
    for mode in tqdm(config.modes, desc=desc, unit="mode", disable=not progress):
        metrics, detail = evaluate_mode(backend, scorer, prompts, config, mode, reference=reference)
        out["eval"][mode] = metrics
        out["scores"][mode] = {"reward": detail["reward"], "cost": detail["cost"]}
        if not out["examples"]:
            out["examples"] = _examples(prompts, detail["answers"], config.examples, mode)
    return out


def _examples(
    prompts: EvalPrompts, answers: dict[str, list[str]], count: int, mode: str
) -> list[dict[str, str]]:
    """The first ``count`` prompts taken in turn from harmful, helpful and XSTest (the same
    prompts for every model), with this model's answers."""
    order = [(name, i) for i in range(count) for name in ("harmful", "helpful", "xstest")]
    out = []
    for name, i in order:
        batch = getattr(prompts, name)
        if i < len(batch) and len(out) < count:
            text = answers[name][i]
            out.append({"set": name, "mode": mode, "prompt": batch.prompts[i], "answer": text})
    return out
