"""Settings of reward- and cost-model training (``constrained-align train-scorer``).

Defaults follow Safe RLHF's score-model scripts (ALGORITHMS.md §2.4: μ = 0.001, weight decay
0.1, Adam β₂ = 0.95, cosine schedule with 3 % warm-up, 2 epochs, sequence-wise loss) except
where a 22M-parameter encoder on 2 CPU cores needs otherwise: a larger learning rate (the
reference's 2e-5 is for 7B models), batches of 16 pairs and sequences cut at 256 tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from constrained_align.config.checks import (
    AT_LEAST_1,
    FRACTION,
    MIN_LENGTH,
    NON_NEGATIVE,
    Range,
    validate,
)
from constrained_align.config.core import param

#: (epochs, learning rate) of each mode when the config leaves them 0. A head alone trains on
#: cached features in milliseconds per epoch and needs many more, larger steps.
MODE_DEFAULTS = {"full": (2, 5e-5), "lora": (3, 1e-3), "frozen": (60, 3e-3)}
LEARNING_RATE_OR_DEFAULT = Range(0.0, 10.0)


@dataclass
class ScorerConfig:
    """One score-model training run."""

    kind: Literal["reward", "cost"] = param(
        "cost", "reward (helpfulness pairs) or cost (harmlessness pairs + safety labels)"
    )
    backbone: str = param(
        "minilm", "minilm | smollm2 | tiny-encoder | tiny-decoder | a local folder | a hub id"
    )
    mode: Literal["full", "frozen", "lora"] = param(
        "full",
        "what trains: full (every weight), frozen (the head, on backbone features computed "
        "once), lora (LoRA adapters and the head)",
    )
    pooling: Literal["auto", "last", "mean", "cls"] = param(
        "auto", "where the score is read: auto = last token for decoders, mean for encoders"
    )
    max_length: int = param(
        256, "tokens per (prompt, response); the prompt is cut from the left", check=MIN_LENGTH
    )
    data: str = param("default", "training rows: default (the embedded set) or a data file")
    data_format: Literal["auto", "pairs", "pku", "hh-rlhf", "chosen-rejected"] = param(
        "auto", "format of a data file"
    )
    skip_invalid: bool = param(
        False, "drop invalid rows of a data file (counted) instead of failing"
    )
    validation_fraction: float = param(
        0.1,
        "share of training conversations held out to pick the best epoch (by prompt hash)",
        check=FRACTION,
    )
    epochs: int = param(
        0,
        "passes over the training pairs (0 = the mode's default: 2 full, 3 lora, 60 frozen)",
        check=NON_NEGATIVE,
    )
    batch_size: int = param(16, "pairs per optimizer step", check=AT_LEAST_1)
    eval_batch_size: int = param(64, "sequences per forward pass when scoring", check=AT_LEAST_1)
    lr: float = param(
        0.0,
        "peak AdamW learning rate (0 = the mode's default: 5e-5 full, 1e-3 lora, 3e-3 frozen)",
        check=LEARNING_RATE_OR_DEFAULT,
    )
    weight_decay: float = param(
        0.1, "AdamW weight decay (not on biases and norms)", check=NON_NEGATIVE
    )
    adam_beta2: float = param(0.95, "AdamW β₂ (β₁ = 0.9)", check=FRACTION)
    warmup_ratio: float = param(
        0.03, "share of steps with a linear warm-up before the cosine", check=FRACTION
    )
    l2_coeff: float = param(
        0.001, "μ, the squared-score penalty of ALGORITHMS.md §2.2–2.3", check=NON_NEGATIVE
    )
    max_train_pairs: int = param(
        0, "use at most this many training pairs (0 = all)", check=NON_NEGATIVE
    )
    calibrate: bool = param(
        True, "cost models: move c = 0 to the best balanced-accuracy threshold on validation"
    )
    seed: int = param(0, "seed of initialisation, shuffling and splitting")
    threads: int = param(0, "torch CPU threads (0 = torch's default)", check=NON_NEGATIVE)

    def resolved_epochs(self) -> int:
        """``epochs``, or the mode's default when 0."""
        return self.epochs or MODE_DEFAULTS[self.mode][0]

    def resolved_lr(self) -> float:
        """``lr``, or the mode's default when 0."""
        return self.lr or MODE_DEFAULTS[self.mode][1]

    def check(self) -> ScorerConfig:
        """Raise :class:`ConfigError` on values no run can use; return self."""
        validate(self)
        return self
