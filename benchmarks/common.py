"""What every case shares: settings, timing, results, the machine and the model/data setup.
The hardware bound and the FLOP formulas are in :mod:`benchmarks.flops`.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from benchmarks.flops import GemmMeter

#: Pairs of the DPO and reference-pass cases.
NUM_PAIRS = 32
#: Seed of every run config and model copy.
SEED = 0

# ---------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Settings:
    """How one benchmark run measures.

    Attributes:
        quick: tiny random models built in code (seconds) instead of SmolLM2 and MiniLM.
        repeats: timed repeats per figure (the median is reported), after one warm-up.
        threads: torch threads.
        workdir: a scratch folder (pairs file, score models, run folders).
    """

    quick: bool
    repeats: int
    threads: int
    workdir: Path

    @property
    def policy(self) -> str:
        """The policy model name of the library's loader."""
        return "tiny-decoder" if self.quick else "smollm2"

    @property
    def scorer_backbone(self) -> str:
        """The score models' backbone."""
        return "tiny-encoder" if self.quick else "minilm"

    @property
    def max_prompt_tokens(self) -> int:
        """Prompt budget; the tiny tokenizer spends a token per byte, so quick allows more."""
        return 256 if self.quick else 96

    @property
    def max_response_tokens(self) -> int:
        """Response budget (EOS included)."""
        return 128 if self.quick else 48

    @property
    def gemm_seconds(self) -> float:
        """Least time spent timing one GEMM shape."""
        return 0.005 if self.quick else 0.2


# ---------------------------------------------------------------------------------- timing


def time_calls(
    fn: Callable[[], Any], repeats: int, *, warmup: int = 1
) -> tuple[list[float], list[Any]]:
    """Call ``fn`` ``warmup`` times untimed, then ``repeats`` times timed.

    Returns:
        The seconds of each timed call and what each returned.
    """
    for _ in range(warmup):
        fn()
    seconds, results = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        results.append(fn())
        seconds.append(time.perf_counter() - started)
    return seconds, results


def median(values: Iterable[float]) -> float:
    """The median of ``values``."""
    return float(statistics.median(list(values)))


# ---------------------------------------------------------------------------------- results


@dataclass
class CaseResult:
    """One row of the table: our figure, the peer's, the unit and the checks of numerics.

    Attributes:
        name: the case.
        ours: our figure (a median over repeats).
        peer: the peer's figure, or None when the peer was skipped (``details["note"]`` says why).
        unit: the unit of both figures.
        higher_is_better: True for rates, False for seconds and MiB.
        share_ours: our share of the hardware bound (see the module docstring).
        share_peer: the peer's share of it.
        details: everything else worth reading (FLOP counts, splits, check values).
        checks: name → passed, for every comparison of numerics between ours and the peer.
    """

    name: str
    ours: float
    peer: float | None
    unit: str
    higher_is_better: bool
    share_ours: float | None = None
    share_peer: float | None = None
    details: dict[str, Any] = field(default_factory=dict)
    checks: dict[str, bool] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        """ours / peer, as named (None without a peer)."""
        return None if self.peer is None or self.peer == 0 else self.ours / self.peer

    @property
    def advantage(self) -> float | None:
        """How many times better ours is: > 1 means ours is better, whatever the unit."""
        ratio = self.ratio
        if ratio is None or ratio == 0:
            return None
        return ratio if self.higher_is_better else 1.0 / ratio

    @property
    def passed(self) -> bool:
        """Whether every check of numerics passed."""
        return all(self.checks.values())

    def to_json(self) -> dict[str, Any]:
        """The row as the ``--json`` file holds it."""
        return {
            "ours": self.ours,
            "peer": self.peer,
            "ratio": self.ratio,
            "unit": self.unit,
            "higher_is_better": self.higher_is_better,
            "bound_share_ours": self.share_ours,
            "bound_share_peer": self.share_peer,
            "details": {**self.details, "checks": dict(self.checks)},
        }


def bound_share(measured: float | None, bound: float, higher_is_better: bool) -> float | None:
    """measured / bound for rates, bound / measured for costs (both ≤ 1 at the bound)."""
    if measured is None or measured <= 0 or bound <= 0:
        return None
    return measured / bound if higher_is_better else bound / measured


def close(a: torch.Tensor, b: torch.Tensor) -> float:
    """The largest absolute difference between two tensors of the same shape."""
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} and {tuple(b.shape)}")
    return float((a.double() - b.double()).abs().max()) if a.numel() else 0.0


# ---------------------------------------------------------------------------------- machine


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``, else the platform's word for it)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(settings: Settings) -> dict[str, Any]:
    """The machine and the software versions, for the top of the output and ``_machine``."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for package in ("torch", "transformers", "trl", "peft"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        **versions,
        "mode": "quick" if settings.quick else "full",
        "repeats": settings.repeats,
    }


# ---------------------------------------------------------------------------------- setup


def quiet() -> None:
    """Silence progress bars and library warnings (the table is the output)."""
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    import warnings

    warnings.filterwarnings("ignore")


def token_ids(tokenizer: Any, text: str) -> list[int]:
    """``text``'s token ids, no special tokens added."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def select_pairs(tokenizer: Any, count: int, max_prompt: int, max_response: int) -> list[dict]:
    """The first ``count`` embedded train pairs with a ``better_response_id`` whose templated
    prompt fits ``max_prompt`` tokens and each response, EOS included, ``max_response`` (so
    neither we nor TRL truncate), and whose prompt + response + EOS text tokenizes as the
    parts do (so TRL's tokenization of the text equals ours)."""
    from constrained_align.data import load_default
    from constrained_align.data.chat import render_prompt, reply_text

    eos, eos_id = tokenizer.eos_token, int(tokenizer.eos_token_id)
    rows = []
    for row in load_default("train").to_list():
        if row["better_response_id"] is None:
            continue
        text = render_prompt(tokenizer, row["prompt"], row["context"] or [])
        prompt = token_ids(tokenizer, text)
        fits = len(prompt) <= max_prompt
        for key in ("response_0", "response_1"):
            reply = reply_text(text, row[key])
            ids = token_ids(tokenizer, reply)
            joint = token_ids(tokenizer, text + reply + eos)
            fits = fits and 0 < len(ids) < max_response and joint == [*prompt, *ids, eos_id]
        if fits:
            rows.append(row)
            if len(rows) == count:
                return rows
    raise RuntimeError(f"only {len(rows)} embedded pairs fit {max_prompt}/{max_response} tokens")


class Bench:
    """One run's shared state: settings, the GEMM meter, loaded models and the chosen data.

    The base policy model is loaded once (a :class:`ModelPool`) and every case gets its own
    deep copy, so a case that trains never changes another's weights.
    """

    def __init__(self, settings: Settings) -> None:
        from constrained_align.backends.causal_lm.loading import ModelPool

        self.settings = settings
        self.meter = GemmMeter(settings.gemm_seconds)
        self.pool = ModelPool()

    def base_model(self) -> tuple[Any, Any]:
        """A fresh copy of the policy's base model (no adapters) and its tokenizer, loaded with
        the arguments the library's builder uses on CPU (so the pool's copy is shared)."""
        return self.pool.load(
            self.settings.policy,
            dtype="float32",
            attn_implementation="sdpa",
            seed=SEED,
            trust_remote_code=False,
        )

    @cached_property
    def tokenizer(self) -> Any:
        """The policy's tokenizer."""
        return self.base_model()[1]

    @cached_property
    def pairs(self) -> list[dict[str, Any]]:
        """The :data:`NUM_PAIRS` pairs of the DPO and reference-pass cases."""
        s = self.settings
        return select_pairs(self.tokenizer, NUM_PAIRS, s.max_prompt_tokens, s.max_response_tokens)

    @cached_property
    def pairs_file(self) -> Path:
        """:attr:`pairs` as a JSONL file in the canonical schema."""
        path = self.settings.workdir / "pairs.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in self.pairs))
        return path

    def lm_config(self, *extra: str) -> Any:
        """The run config of the LM cases: ``dpo:tiny`` on our model, LoRA r 8, α 16 on
        q/k/v/o, AdamW lr 1e-4, β 0.1, 4 pairs per step over :attr:`pairs_file`."""
        from constrained_align.algorithms import load_run_config

        s = self.settings
        return load_run_config(
            "dpo:tiny",
            [
                f"policy={s.policy}",
                "lora_r=8",
                "lora_alpha=16",
                "lora_target_modules=[q_proj,k_proj,v_proj,o_proj]",
                f"max_prompt_tokens={s.max_prompt_tokens}",
                f"max_response_tokens={s.max_response_tokens}",
                "pair_batch_size=4",
                "lr=1e-4",
                "name=adamw",
                "weight_decay=0.0",
                "max_grad_norm=1.0",
                "beta=0.1",
                f"pairs={self.pairs_file}",
                f"max_pairs={NUM_PAIRS}",
                f"seed={SEED}",
                *extra,
            ],
        )

    def policy(self) -> Any:
        """A fresh :class:`CausalLMPolicy` from the library's own builder."""
        from constrained_align.runner.build import build_policy

        return build_policy(self.lm_config(), pool=self.pool)

    def prompts(self, count: int) -> Any:
        """The first ``count`` embedded train prompts whose templated form fits the prompt
        budget (so neither side truncates), as a ``PromptBatch``."""
        from constrained_align.backends.causal_lm import PromptBatch
        from constrained_align.data import load_default_prompts
        from constrained_align.data.chat import render_prompt

        prompts, contexts = [], []
        for row in load_default_prompts("train").to_list():
            text = render_prompt(self.tokenizer, row["prompt"], row["context"] or [])
            if len(token_ids(self.tokenizer, text)) <= self.settings.max_prompt_tokens:
                prompts.append(row["prompt"])
                contexts.append(list(row["context"] or []))
                if len(prompts) == count:
                    return PromptBatch(prompts, contexts)
        raise RuntimeError(f"only {len(prompts)} embedded prompts fit the prompt budget")
