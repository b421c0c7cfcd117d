"""``ConstrainedDPOTrainer``: stock-equal DPO, hand-checked losses, λ direction, resume, PEFT.

Everything runs on tiny Llama models built in code (CPU, fp32). The policy and the reference use
different seeds, so the log-ratios ℓ = log π_θ − log π_ref are not zero and the checks bite.
"""

from __future__ import annotations

import itertools
import json
import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from peft import LoraConfig
from transformers import TrainerCallback
from trl import DPOConfig, DPOTrainer

from constrained_align.config import DualConfig
from constrained_align.integrations.trl import (
    DUAL_STATE_NAME,
    EXTRA_COLUMNS,
    ConstrainedDPOTrainer,
    snis_estimate,
)
from constrained_align.integrations.trl.dual import DualSignal
from constrained_align.losses import bfpo_targets, ipo_squared_loss, safe_dpo_loss
from constrained_align.models.tiny import tiny_causal_lm, tiny_tokenizer
from constrained_align.primal_dual import (
    BatchMean,
    Constraint,
    Fixed,
    PrimalDual,
    Projected,
    WindowMean,
)

BETA = 0.5


def canonical_rows(n: int = 4, *, cost: float = 1.0) -> list[dict[str, object]]:
    """Pairs with varied lengths, alternating preferences, one unsafe response each.

    Costs are ``cost`` ± 0.5, so they all sit on the side of 0 that ``cost`` is on.
    """
    rows = []
    for i in range(n):
        rows.append(
            {
                "prompt": f"Question {i}: what now?",
                "response_0": " sure" * (i % 3 + 1),
                "response_1": f" no {i}",
                "better_response_id": i % 2,
                "safer_response_id": 1,
                "is_response_0_safe": i % 2 == 0,
                "is_response_1_safe": True,
                "reward_0": 0.3 * i,
                "reward_1": 1.0 - 0.2 * i,
                "cost_0": cost + 0.5,
                "cost_1": cost - 0.5 + 0.1 * i,
            }
        )
    return rows


def stock_rows(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """The same pairs as TRL's chosen/rejected (chosen = the more helpful response)."""
    out = []
    for row in rows:
        better = row["better_response_id"]
        out.append(
            {
                "prompt": row["prompt"],
                "chosen": row[f"response_{better}"],
                "rejected": row[f"response_{1 - better}"],
            }
        )
    return out


def make_args(out: object, **overrides: object) -> DPOConfig:
    settings = {
        "output_dir": str(out),
        "bf16": False,
        "use_cpu": True,
        "report_to": [],
        "dataloader_pin_memory": False,
        "gradient_checkpointing": False,
        "per_device_train_batch_size": 2,
        "max_steps": 1,
        "logging_steps": 1,
        "save_strategy": "no",
        "learning_rate": 1e-2,
        "beta": BETA,
        "disable_tqdm": True,
        "seed": 0,
    }
    return DPOConfig(**{**settings, **overrides})


def make_trainer(out: object, rows: list[dict[str, object]], **kwargs: object):
    trainer_cls = kwargs.pop("trainer_cls", ConstrainedDPOTrainer)
    args = kwargs.pop("args", None) or make_args(out)
    ref = kwargs.pop("ref_model", "make")
    return trainer_cls(
        tiny_causal_lm(0),
        ref_model=tiny_causal_lm(1) if ref == "make" else ref,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tiny_tokenizer(),
        **kwargs,
    )


def first_batch(trainer: DPOTrainer, n: int = 4) -> dict[str, torch.Tensor]:
    examples = [trainer.train_dataset[i] for i in range(n)]
    return trainer._prepare_inputs(trainer.data_collator(examples))


def eval_loss(trainer: DPOTrainer, batch: dict[str, torch.Tensor]) -> float:
    trainer.model.eval()
    with torch.no_grad():
        return float(trainer.compute_loss(trainer.model, dict(batch)))


def projected(init: float, lr: float, estimator: object = None) -> PrimalDual:
    rule = Projected(init=init, lr=lr)
    return PrimalDual({"cost": Constraint(rule, estimator or BatchMean(), cost_limit=0.0)})


def hand_logratios(trainer: DPOTrainer, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """``(2B,)`` ℓ of [chosen; rejected] from full logits: logits at t − 1 score token t."""

    def seq_logps(model: torch.nn.Module) -> torch.Tensor:
        with torch.no_grad():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        logp = F.log_softmax(logits.logits[:, :-1].double(), dim=-1)
        token = logp.gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)  # (2B, T−1)
        return (token * batch["completion_mask"][:, 1:]).sum(dim=1)

    trainer.model.eval()
    return seq_logps(trainer.model) - seq_logps(trainer.ref_model)


# --- a. equivalence with stock TRL ----------------------------------------------------------------


def test_dpo_loss_and_margins_equal_stock_trl(tmp_path: object) -> None:
    """loss="dpo" gives stock DPOTrainer's loss and rewards/margins on the same batch (< 1e-6),
    from canonical rows and from the same pairs as chosen/rejected rows."""
    rows = canonical_rows(4)
    stock = make_trainer(tmp_path, stock_rows(rows), trainer_cls=DPOTrainer)
    ours = make_trainer(tmp_path, rows, loss="dpo")
    ours_stock_data = make_trainer(tmp_path, stock_rows(rows), loss="dpo")
    reference_batch = first_batch(stock)
    reference = eval_loss(stock, reference_batch)
    reference_margin = stock._metrics["eval"]["rewards/margins"][-1]
    assert abs(reference) > 0 and abs(reference_margin) > 1e-4
    for trainer in (ours, ours_stock_data):
        batch = first_batch(trainer)
        assert torch.equal(batch["input_ids"], reference_batch["input_ids"])
        assert abs(eval_loss(trainer, batch) - reference) < 1e-6
        metrics = trainer._metrics["eval"]
        assert abs(metrics["rewards/margins"][-1] - reference_margin) < 1e-6
        for key in ("rewards/chosen", "rewards/accuracies", "logps/chosen", "logps/rejected"):
            assert abs(metrics[key][-1] - stock._metrics["eval"][key][-1]) < 1e-6, key


# --- b. hand checks of every loss -----------------------------------------------------------------


def _expected(loss: str, rows: list[dict[str, object]], l_c: torch.Tensor, l_r: torch.Tensor):
    """The loss from hand log-ratios and the raw rows (chosen = the better response)."""
    better = [int(r["better_response_id"]) for r in rows]

    def field(template: str, side: int) -> torch.Tensor:
        idx = [b if side == 0 else 1 - b for b in better]
        return torch.tensor([float(r[template.format(i)]) for r, i in zip(rows, idx)]).double()

    if loss == "lagrangian":
        lam, temp = 0.7, 2.0
        margin = (field("reward_{}", 0) - lam * field("cost_{}", 0)) - (
            field("reward_{}", 1) - lam * field("cost_{}", 1)
        )
        p = torch.sigmoid(margin / temp)
        z = BETA * (l_c - l_r)
        return float((-p * F.logsigmoid(z) - (1 - p) * F.logsigmoid(-z)).mean())
    h_c = 1.0 - field("is_response_{}_safe", 0)
    h_r = 1.0 - field("is_response_{}_safe", 1)
    if loss == "safe_dpo":
        kwargs = {"chosen_unsafe": h_c, "rejected_unsafe": h_r, "beta": BETA, "delta": 3.0}
        return float(safe_dpo_loss(l_c, l_r, **kwargs)[0])
    target = bfpo_targets(1 - h_c, 1 - h_r, b1=3.0, alpha=0.5) / BETA
    return float(ipo_squared_loss(l_c, l_r, target=target)[0])


@pytest.mark.parametrize("loss", ["lagrangian", "safe_dpo", "bfpo"])
def test_loss_equals_hand_computation(tmp_path: object, loss: str) -> None:
    """With fixed λ = 0.7 and T = 2, the Lagrangian loss is dpo_loss against
    p = σ(((r_c − λc_c) − (r_r − λc_r))/T) on log-ratios summed by hand over the completion
    tokens; SafeDPO (Δ = 3) and BFPO (τ = β) likewise equal the pure losses on those ratios."""
    rows = canonical_rows(4)
    extra = {"delta": 3.0}
    if loss == "lagrangian":
        extra = {
            "temperature": 2.0,
            "primal_dual": PrimalDual(
                {"cost": Constraint(Fixed(value=0.7), BatchMean(), cost_limit=0.0)}
            ),
        }
    trainer = make_trainer(tmp_path, rows, loss=loss, **extra)
    batch = first_batch(trainer)
    l_c, l_r = hand_logratios(trainer, batch).chunk(2)
    expected = _expected(loss, rows, l_c, l_r)
    assert eval_loss(trainer, batch) == pytest.approx(expected, abs=1e-5)
    if loss == "lagrangian":
        assert trainer._metrics["eval"]["dual/lambda"][-1] == 0.7


# --- c. λ direction, cadence and the importance estimate ----------------------------------------


class _CountSteps:
    """Wraps ``PrimalDual.step`` to record the global steps it is called with."""

    def __init__(self, pd: PrimalDual):
        self.calls: list[int] = []
        self._step = pd.step
        pd.step = self  # type: ignore[method-assign]

    def __call__(self, global_step: int, *args: object, **kwargs: object) -> dict[str, float]:
        self.calls.append(global_step)
        return self._step(global_step, *args, **kwargs)


def _lambdas(trainer: DPOTrainer) -> list[float]:
    return [log["dual/lambda"] for log in trainer.state.log_history if "dual/lambda" in log]


def test_lambda_rises_when_costs_exceed_the_limit(tmp_path: object) -> None:
    """Costs all above d = 0: λ (projected rule, step size from the cost range) rises every
    optimizer step; with 2 accumulation steps the dual moves once per optimizer step only."""
    dual = DualConfig(multiplier="projected", cost_limit=0.0, lambda_lr=None, cost_window=0)
    args = make_args(tmp_path, max_steps=3, gradient_accumulation_steps=2)
    trainer = make_trainer(
        tmp_path, canonical_rows(8, cost=2.0), args=args, loss="lagrangian", dual=dual
    )
    counter = _CountSteps(trainer.primal_dual)
    trainer.train()
    seen = [*_lambdas(trainer), trainer.primal_dual.lam()]
    assert counter.calls == [1, 2, 3]
    assert seen[0] == 0.0 and all(b > a for a, b in itertools.pairwise(seen))
    assert trainer.state.log_history[0]["constraint/violation"] > 0


def test_lambda_falls_to_zero_when_costs_are_below_the_limit(tmp_path: object) -> None:
    """Costs all below d = 0: from λ = 0.5, λ falls and is projected onto 0, where it stays."""
    pd = projected(init=0.5, lr=0.2, estimator=WindowMean(16))
    args = make_args(tmp_path, max_steps=4)
    trainer = make_trainer(
        tmp_path, canonical_rows(8, cost=-2.0), args=args, loss="lagrangian", primal_dual=pd
    )
    trainer.train()
    seen = [*_lambdas(trainer), pd.lam()]
    assert seen[0] == 0.5 and all(b <= a for a, b in itertools.pairwise(seen))
    assert seen[-1] == 0.0


def test_dual_signal_is_the_self_normalised_importance_estimate() -> None:
    """Ĵ_C = Σ softmax(ℓ) c, stable for huge ℓ; micro-batches of one step are pooled."""
    ell = torch.tensor([1000.0, 999.0, -5.0, 998.0])
    cost = torch.tensor([1.0, 3.0, 100.0, -2.0])
    w = [1.0, math.exp(-1), math.exp(-1005), math.exp(-2)]
    expected = math.fsum(wi * ci for wi, ci in zip(w, cost.tolist())) / math.fsum(w)
    assert snis_estimate(ell, cost) == pytest.approx(expected, rel=1e-12)
    pd = projected(init=0.0, lr=1.0, estimator=WindowMean(128))
    signal = DualSignal(pd)
    signal.record(ell[:2], cost[:2])
    signal.record(ell[2:], cost[2:])
    metrics = signal.step(1)
    assert metrics["constraint/cost_estimate"] == pytest.approx(expected, rel=1e-12)
    assert pd.lam() == pytest.approx(expected)


# --- d. checkpoint and resume ---------------------------------------------------------------------


class _LambdaAtStart(TrainerCallback):
    def __init__(self, pd: PrimalDual):
        self.pd, self.value = pd, None

    def on_train_begin(self, args: object, state: object, control: object, **kw: object) -> None:
        self.value = self.pd.lam()


def test_multiplier_is_saved_and_restored_on_resume(tmp_path: object) -> None:
    """Checkpoints hold primal_dual.json; a new trainer resumed from one starts at the saved λ
    (rule and window restored) and keeps training."""
    rows = canonical_rows(8, cost=2.0)
    out = tmp_path / "run"
    first_pd = projected(init=0.0, lr=0.1, estimator=WindowMean(32))
    first = make_trainer(
        out,
        rows,
        args=make_args(out, max_steps=2, save_strategy="steps", save_steps=2),
        loss="lagrangian",
        primal_dual=first_pd,
    )
    first.train()
    checkpoint = out / "checkpoint-2"
    saved = json.loads((checkpoint / DUAL_STATE_NAME).read_text())
    assert saved["global_step"] == 2 and saved["state"] == first_pd.state_dict()
    assert first_pd.lam() > 0
    assert not [p for p in checkpoint.iterdir() if p.name.endswith(".tmp")]

    second_pd = projected(init=0.0, lr=0.1, estimator=WindowMean(32))
    start = _LambdaAtStart(second_pd)
    second = make_trainer(
        out,
        rows,
        args=make_args(out, max_steps=3),
        loss="lagrangian",
        primal_dual=second_pd,
        callbacks=[start],
    )
    with pytest.raises(FileNotFoundError, match="multiplier state"):
        second.train(resume_from_checkpoint=str(tmp_path))
    second.train(resume_from_checkpoint=True)
    assert start.value == first_pd.lam()
    assert second.state.global_step == 3
    assert second_pd.lam() > first_pd.lam()


# --- e. PEFT ----------------------------------------------------------------------------------


def test_lora_run_uses_adapters_off_as_reference_and_logs_lambda(tmp_path: object) -> None:
    """With a LoraConfig and no ref_model, the reference is the adapter-free base model, so the
    first step's log-ratios are 0 (LoRA's B starts at 0); training runs and logs dual/lambda."""
    lora = LoraConfig(
        r=4,
        lora_alpha=8,
        lora_dropout=0.0,
        target_modules=["q_proj", "v_proj"],
        task_type="CAUSAL_LM",
    )
    trainer = make_trainer(
        tmp_path,
        canonical_rows(4),
        ref_model=None,
        peft_config=lora,
        loss="lagrangian",
        primal_dual=projected(0.0, 0.1),
    )
    assert trainer.ref_model is None
    trainer.train()
    log = trainer.state.log_history[0]
    assert log["dual/lambda"] == 0.0 and "constraint/cost_estimate" in log
    assert log["rewards/margins"] == 0.0 and math.isfinite(log["loss"])


# --- f. extra columns -------------------------------------------------------------------------


def test_extra_columns_are_collated_but_never_reach_the_model(tmp_path: object) -> None:
    """The collated batch carries the safety columns (oriented chosen = better); a SafeDPO run
    completes and no model call ever sees them."""
    rows = canonical_rows(4)
    trainer = make_trainer(tmp_path, rows, loss="safe_dpo")
    batch = first_batch(trainer)
    assert set(EXTRA_COLUMNS) <= set(batch)
    expected_unsafe = [float(not r[f"is_response_{r['better_response_id']}_safe"]) for r in rows]
    assert batch["ca_chosen_unsafe"].tolist() == expected_unsafe
    expected_cost = [r[f"cost_{1 - r['better_response_id']}"] for r in rows]
    assert batch["ca_rejected_cost"].tolist() == pytest.approx(expected_cost)
    seen: list[set[str]] = []

    def hook(module: object, args: object, kwargs: dict[str, object]) -> None:
        seen.append(set(kwargs))

    for model in (trainer.model, trainer.ref_model):
        model.register_forward_pre_hook(hook, with_kwargs=True)
    trainer.train()
    assert seen and not any(keys & set(EXTRA_COLUMNS) for keys in seen)
    assert "safe_dpo/dropped_fraction" in trainer.state.log_history[0]


def test_multi_turn_rows_go_through_the_chat_template(tmp_path: object) -> None:
    """Rows with a context become conversations; TRL renders them with the chat template."""
    rows = canonical_rows(2)
    for row in rows:
        row["context"] = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    trainer = make_trainer(tmp_path, rows, loss="dpo")
    tokenizer = trainer.processing_class
    example = trainer.train_dataset[0]
    prompt = tokenizer.decode(example["prompt_ids"])
    assert prompt.startswith("User: hi\nAssistant: yo<eos>\nUser: Question 0")
    assert prompt.endswith("Assistant:")
    # "Assistant: " + content, and this row's better response is " sure".
    assert tokenizer.decode(example["chosen_ids"]) == "  sure<eos>\n"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"loss": "kto"}, "unknown loss"),
        ({"loss": "lagrangian"}, "needs λ"),
        ({"loss": "dpo", "primal_dual": "pd"}, "has no λ"),
        ({"loss": "safe_dpo", "stock": True}, "only canonical"),
        ({"loss": "safe_dpo", "args": {"loss_type": ["ipo"]}}, "loss_type"),
    ],
)
def test_invalid_setups_are_rejected(tmp_path: object, kwargs: dict, match: str) -> None:
    """Unknown losses, a missing or superfluous λ, data without labels, and TRL loss options."""
    kwargs = dict(kwargs)
    rows = stock_rows(canonical_rows(2)) if kwargs.pop("stock", False) else canonical_rows(2)
    if kwargs.get("primal_dual") == "pd":
        kwargs["primal_dual"] = projected(0.0, 0.1)
    if "args" in kwargs:
        kwargs["args"] = make_args(tmp_path, **kwargs["args"])
    with pytest.raises(ValueError, match=match):
        make_trainer(tmp_path, rows, **kwargs)
