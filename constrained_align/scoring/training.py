"""Training loop of reward and cost models (``constrained-align train-scorer reward|cost``).

Reward models train on helpfulness pairs with :func:`~constrained_align.losses.reward_model_loss`
(Bradley–Terry + L2); cost models on harmlessness pairs plus per-response safety labels with
:func:`~constrained_align.losses.cost_model_loss` (Bradley–Terry + sign terms + L2). After every
epoch the model is scored on a validation split carved from the training rows, and the best
epoch is kept; the held-out evaluation split is never used for that choice, so the figures
``eval-scorer`` reports on it are clean.

Output folder::

    model/            the best epoch's score model (safetensors + configs + tokenizer)
    config.yaml       the resolved ScorerConfig
    metrics.jsonl     one line per logged step and per validation
    summary.json      data sizes, best epoch, validation metrics, wall time, threads
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from constrained_align.config import ScorerConfig, dump_yaml
from constrained_align.data import (
    harmlessness_pairs,
    helpfulness_pairs,
    labelled_responses,
    load_default,
    load_file,
)
from constrained_align.data.default import split_key
from constrained_align.data.schema import iter_rows
from constrained_align.losses import cost_model_loss, reward_model_loss
from constrained_align.scoring import modes
from constrained_align.scoring.calibrate import calibrate_saved
from constrained_align.scoring.features import FeatureCache
from constrained_align.scoring.metrics import evaluate_cost, evaluate_reward
from constrained_align.scoring.score_model import Encoded, ScoreModel
from constrained_align.scoring.text_scorer import TextScorer
from constrained_align.utils import json_safe, write_json, write_text
from constrained_align.utils.cache import user_cache_dir

LOG_EVERY = 10


@dataclass
class ScorerData:
    """Canonical rows for one run: training rows and validation rows."""

    train: Dataset
    validation: Dataset


@dataclass
class Batches:
    """Tokenized training pairs: ``first[i]``/``second[i]`` are scored against each other."""

    first: list[Encoded]
    second: list[Encoded]
    columns: dict[str, torch.Tensor]

    def __len__(self) -> int:
        return len(self.first)

    def lengths(self) -> np.ndarray:
        """``(N,)`` tokens of both sides of each pair, for length-grouped batching."""
        return np.array(
            [len(a.input_ids) + len(b.input_ids) for a, b in zip(self.first, self.second)]
        )


def load_scorer_data(config: ScorerConfig) -> ScorerData:
    """Training rows of ``config.data`` with a validation share carved out by conversation.

    ``default`` means the embedded set's *train* split; its eval split stays untouched for
    ``eval-scorer``. A conversation (context + prompt) goes to validation when a seeded hash of
    it falls below ``validation_fraction``, so no prompt is in both parts.

    Args:
        config: the run's settings (``data``, ``data_format``, ``skip_invalid``,
            ``validation_fraction``, ``seed``).

    Returns:
        Training and validation rows.

    Raises:
        ConfigError: unusable settings.
        DataError: an unreadable data file, or invalid rows without ``skip_invalid``.
    """
    config.check()
    if config.data == "default":
        rows = load_default("train")
    else:
        rows = load_file(config.data, fmt=config.data_format, skip_invalid=config.skip_invalid)
    salt = f"validation:{config.seed}:"
    keys = [
        split_key(p, c) for p, c in zip(rows["prompt"], rows["context"])
    ]  # one hash per conversation
    u = np.array(
        [int(hashlib.sha256((salt + k).encode()).hexdigest()[:8], 16) / 2**32 for k in keys]
    )
    held = u < config.validation_fraction
    return ScorerData(
        train=rows.select(np.flatnonzero(~held)), validation=rows.select(np.flatnonzero(held))
    )


def pair_view(kind: str, rows: Dataset) -> Dataset:
    """The pairs a ``kind`` model trains on: helpfulness (reward) or harmlessness (cost)."""
    return helpfulness_pairs(rows) if kind == "reward" else harmlessness_pairs(rows)


def tokenize_pairs(model: ScoreModel, kind: str, pairs: Dataset) -> Batches:
    """Encode both sides of every pair once; the loss columns become tensors.

    Args:
        model: the score model whose tokenizer and truncation rule apply.
        kind: ``reward`` (``chosen`` vs ``rejected``) or ``cost`` (``unsafer`` vs ``safer``).
        pairs: the :func:`pair_view` of the training rows.

    Returns:
        Both sides tokenized, plus the cost loss's sign and ``ranked`` columns.
    """
    first_col, second_col = ("chosen", "rejected") if kind == "reward" else ("unsafer", "safer")
    prompts, contexts = pairs["prompt"], pairs["context"]
    first = [model.encode(p, r, c) for p, r, c in zip(prompts, pairs[first_col], contexts)]
    second = [model.encode(p, r, c) for p, r, c in zip(prompts, pairs[second_col], contexts)]
    columns: dict[str, torch.Tensor] = {}
    if kind == "cost":
        columns = {
            "unsafer_sign": torch.tensor(pairs["unsafer_sign"], dtype=torch.float32),
            "safer_sign": torch.tensor(pairs["safer_sign"], dtype=torch.float32),
            "ranked": torch.tensor(pairs["ranked"], dtype=torch.bool),
        }
    return Batches(first, second, columns)


def length_grouped_batches(
    lengths: np.ndarray, batch_size: int, rng: np.random.Generator, *, group: int = 32
) -> Iterator[np.ndarray]:
    """Shuffled batches whose members have similar lengths, so padding wastes little compute.

    Rows are shuffled, cut into chunks of ``group`` batches, sorted by length inside each chunk
    and batched; the batch order is shuffled again so long batches are not bunched together.
    """
    order = rng.permutation(len(lengths))
    chunk = batch_size * group
    batches = []
    for start in range(0, len(order), chunk):
        part = order[start : start + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    for i in rng.permutation(len(batches)):
        yield batches[i]


def pair_loss(
    model: ScoreModel, kind: str, data: Batches, idx: np.ndarray, l2_coeff: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """The score-model loss of one batch of pairs (both sides in one forward pass).

    Args:
        model: the score model.
        kind: ``reward`` or ``cost``.
        data: the tokenized training pairs.
        idx: ``(B,)`` indices of this batch's pairs.
        l2_coeff: μ of the squared-score penalty.

    Returns:
        ``(loss, metrics)`` of :func:`reward_model_loss` or :func:`cost_model_loss`.
    """
    items = [data.first[i] for i in idx] + [data.second[i] for i in idx]
    scores = model(**model.collate(items))  # (2B,)
    a, b = scores[: len(idx)], scores[len(idx) :]
    if kind == "reward":
        return reward_model_loss(a, b, l2_coeff=l2_coeff)
    cols = {k: v[torch.as_tensor(idx)] for k, v in data.columns.items()}
    return cost_model_loss(a, b, **cols, l2_coeff=l2_coeff)


def validate(scorer: TextScorer, kind: str, rows: Dataset) -> dict[str, Any]:
    """Validation metrics and the one number the best epoch is chosen by (``select``).

    Args:
        scorer: the score model being trained (evaluated without gradients), kept by the
            training loop so that the validation texts are tokenized once.
        kind: ``reward`` (pairwise accuracy) or ``cost`` (mean of ranking accuracy and balanced
            safety-classification accuracy).
        rows: canonical validation rows.

    Returns:
        The metrics of :func:`evaluate_reward` / :func:`evaluate_cost` plus ``select``.
    """
    if kind == "reward":
        metrics = evaluate_reward(scorer, helpfulness_pairs(rows))
        return {**metrics, "select": metrics["accuracy"]}
    metrics = evaluate_cost(scorer, harmlessness_pairs(rows), labelled_responses(rows))
    # Balanced accuracy, not plain accuracy: on XSTest most responses are safe, and plain
    # accuracy would favour an epoch that calls everything safe.
    parts = [metrics["ranking_accuracy"], metrics["classification"]["balanced_accuracy"]]
    finite = [p for p in parts if p == p]
    return {**metrics, "select": float(np.mean(finite)) if finite else float("nan")}


def _json_line(record: dict[str, Any]) -> str:
    """One strict-JSON line (NaN → null)."""
    return json.dumps(json_safe(record), allow_nan=False) + "\n"


def _optimizer(model: ScoreModel, config: ScorerConfig) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or "norm" in name.lower() else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.resolved_lr(), betas=(0.9, config.adam_beta2))


@dataclass
class _Loop:
    """The state one training run carries from step to step."""

    model: ScoreModel
    config: ScorerConfig
    batches: Batches
    rng: np.random.Generator
    optimizer: torch.optim.Optimizer
    schedule: Any
    log: Any
    bar: Any
    total: int
    step: int = 0

    def run(self, epochs: int, validation: Dataset, folder: Path) -> dict[str, Any]:
        """Train ``epochs`` epochs, validating after each and saving the best to ``folder``;
        the best epoch's validation metrics (with ``epoch``)."""
        best: dict[str, Any] = {"select": -np.inf}
        scorer = TextScorer(
            self.model, batch_size=self.config.eval_batch_size, progress=False, keep_tokens=True
        )
        for epoch in range(1, epochs + 1):
            self.epoch(epoch)
            val = validate(scorer, self.config.kind, validation)
            self.log.write(_json_line({"step": self.step, "epoch": epoch, "validation": val}))
            self.log.flush()
            score = val["select"] if np.isfinite(val["select"]) else -np.inf
            if _is_better(score, best["select"]):
                best = {**val, "select": score, "epoch": epoch}
                self.model.save_pretrained(folder)
        return best

    def epoch(self, epoch: int) -> None:
        """One pass over the training pairs, in length-grouped batches."""
        self.model.train()
        lengths = self.batches.lengths()
        for idx in length_grouped_batches(lengths, self.config.batch_size, self.rng):
            loss, metrics = pair_loss(
                self.model, self.config.kind, self.batches, idx, self.config.l2_coeff
            )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.schedule.step()
            self.step += 1
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss.item():.3f}", epoch=epoch)
            if self.step % LOG_EVERY == 0 or self.step == self.total:
                record = {"step": self.step, "epoch": epoch, "loss": loss.item(), **metrics}
                self.log.write(_json_line({**record, "lr": self.schedule.get_last_lr()[0]}))


def _training_pairs(config: ScorerConfig, rows: Dataset, rng: np.random.Generator) -> Dataset:
    """The pairs of ``rows`` this kind trains on, at most ``max_train_pairs`` of them."""
    pairs = pair_view(config.kind, rows)
    if config.max_train_pairs and len(pairs) > config.max_train_pairs:
        pairs = pairs.select(np.sort(rng.permutation(len(pairs))[: config.max_train_pairs]))
    if len(pairs) == 0:
        raise ValueError(f"no {config.kind} training pairs in the data")
    return pairs


def _feature_cache(
    model: ScoreModel, config: ScorerConfig, batches: Batches, validation: Dataset, progress: bool
) -> FeatureCache:
    """Features of every training and validation input, computed once (or read from disk)."""
    cache = FeatureCache(model, user_cache_dir() / "features")
    items = batches.first + batches.second
    for row in iter_rows(validation):
        items += [model.encode(row["prompt"], row[f"response_{k}"], row["context"]) for k in (0, 1)]
    model.eval()
    cache.fill(model, items, config.eval_batch_size, progress=progress)
    return cache


def _is_better(score: float, best: float) -> bool:
    """Whether an epoch's selection score replaces the best so far.

    A NaN score (no validation pairs of this kind) counts as −∞ and never wins; when no epoch
    has a finite score, the latest epoch is kept.
    """
    return score > best or score == best == -np.inf


def _new_model(config: ScorerConfig) -> ScoreModel:
    """A fresh score model on the config's backbone, with the mode's weights set to train."""
    model = ScoreModel.from_backbone(
        config.backbone,
        config.kind,
        pooling=config.pooling,
        max_length=config.max_length,
        seed=config.seed,
    )
    return modes.prepare(model, config.mode)


def train_scorer(
    config: ScorerConfig,
    data: ScorerData,
    output_dir: str | Path,
    *,
    progress: bool = True,
) -> dict[str, Any]:
    """Train a reward or cost model and keep its best epoch under ``output_dir/model``.

    Args:
        config: the run's settings (``config.kind`` picks reward or cost).
        data: canonical training and validation rows.
        output_dir: where the model, config, metrics and summary go.
        progress: show a progress bar.

    Returns:
        The summary also written to ``summary.json``.
    """
    config.check()
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if config.threads:
        torch.set_num_threads(config.threads)
    start = time.perf_counter()
    write_text(out / "config.yaml", dump_yaml(config))
    model = _new_model(config)
    rng = np.random.default_rng(config.seed)
    pairs = _training_pairs(config, data.train, rng)
    batches = tokenize_pairs(model, config.kind, pairs)
    epochs = config.resolved_epochs()
    if config.mode == "frozen":
        model.feature_cache = _feature_cache(model, config, batches, data.validation, progress)
    total = -(-len(batches) // config.batch_size) * epochs
    optimizer = _optimizer(model, config)
    schedule = get_cosine_schedule_with_warmup(
        optimizer, int(config.warmup_ratio * total), max(total, 1)
    )
    with (
        (out / "metrics.jsonl").open("w", encoding="utf-8") as log,
        tqdm(total=total, desc=f"train {config.kind} model", disable=not progress) as bar,
    ):
        loop = _Loop(model, config, batches, rng, optimizer, schedule, log, bar, total)
        best = loop.run(epochs, data.validation, out / "model")
    calibration = (
        calibrate_saved(out / "model", data.validation, config.eval_batch_size, progress)
        if config.kind == "cost" and config.calibrate
        else None
    )
    summary = {
        "kind": config.kind,
        "backbone": config.backbone,
        "mode": config.mode,
        "epochs": epochs,
        "calibration": calibration,
        "train_pairs": len(pairs),
        "validation_rows": len(data.validation),
        "steps": loop.step,
        "best_epoch": best["epoch"],
        "validation": {k: v for k, v in best.items() if k != "epoch"},
        "wall_seconds": time.perf_counter() - start,
        "threads": torch.get_num_threads(),
    }
    write_json(out / "summary.json", summary)
    return summary
