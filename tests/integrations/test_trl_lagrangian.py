"""``LagrangianCallback`` on stock ``GRPOTrainer`` / ``RLOOTrainer`` (ALGORITHMS.md §3.3).

A tiny Llama (saved to disk, so TRL can load its reference model by path) generates 4-token
completions on CPU. Rewards and costs are deterministic functions of the completion's bytes, or
tiny random score models for the conversational run. Every cost call is recorded by the test, so
the multiplier can be recomputed by hand from the costs the trainer actually saw.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import itertools
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from datasets import Dataset
from transformers import TrainerCallback
from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

from constrained_align.config import DualConfig
from constrained_align.integrations.trl import (
    DUAL_STATE_NAME,
    CostFunction,
    LagrangianCallback,
    RewardWeightsError,
    ScoreFunction,
    make_lagrangian,
)
from constrained_align.integrations.trl.score_funcs import BATCH_COST_KEY, to_scorer_inputs
from constrained_align.models.tiny import tiny_causal_lm, tiny_tokenizer
from constrained_align.scoring import ScoreModel, TextScorer

TRAINERS = {"grpo": (GRPOTrainer, GRPOConfig), "rloo": (RLOOTrainer, RLOOConfig)}


def byte_mean_cost(prompts: list[str], responses: list[str], contexts: Any) -> list[float]:
    """c = mean byte value / 255 − 0.5 ∈ [−0.5, 0.5]: deterministic and varied."""
    out = []
    for response in responses:
        data = response.encode("utf-8") or b"\0"
        out.append(sum(data) / len(data) / 255 - 0.5)
    return out


def distinct_reward(prompts: list[str], responses: list[str], contexts: Any) -> list[float]:
    """r = number of distinct characters of the response."""
    return [float(len(set(r))) for r in responses]


class RecordingCost:
    """``byte_mean_cost`` that remembers each call's costs (one call per generation batch)."""

    def __init__(self) -> None:
        self.calls: list[list[float]] = []

    def __call__(self, prompts: list[str], responses: list[str], contexts: Any) -> list[float]:
        costs = byte_mean_cost(prompts, responses, contexts)
        self.calls.append(costs)
        return costs


class Probe(TrainerCallback):
    """Registered after the Lagrangian callback: sees the state each event leaves behind."""

    def __init__(self, callback: LagrangianCallback):
        self.callback = callback
        self.steps: list[tuple[float, float]] = []
        self.begin: tuple[float, float] | None = None

    def _read(self) -> tuple[float, float]:
        weights = self.callback.trainer.reward_weights
        return float(weights[self.callback.cost_index]), self.callback.lam

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.begin = self._read()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.steps.append(self._read())


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("policy")
    tiny_causal_lm(0).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return str(folder)


def prompts(conversational: bool = False) -> Dataset:
    rows = []
    for i in range(8):
        if conversational:
            system = {"role": "system", "content": "Be brief."}
            rows.append({"prompt": [system, {"role": "user", "content": f"Question {i}?"}]})
        else:
            rows.append({"prompt": f"Question {i}?"})
    return Dataset.from_list(rows)


def make_args(kind: str, out: Path, **overrides: Any) -> Any:
    settings: dict[str, Any] = {
        "output_dir": str(out),
        "bf16": False,
        "use_cpu": True,
        "report_to": [],
        "dataloader_pin_memory": False,
        "per_device_train_batch_size": 4,
        "num_generations": 2,
        "max_completion_length": 4,
        "max_steps": 3,
        "logging_steps": 1,
        "save_strategy": "no",
        "learning_rate": 1e-3,
        "beta": 0.1,
        "disable_tqdm": True,
        "seed": 0,
    }
    if kind == "grpo":
        settings["scale_rewards"] = "none"
    return TRAINERS[kind][1](**{**settings, **overrides})


def build(
    kind: str, policy_dir: str, out: Path, dual: DualConfig, *, cost: Any = None, **overrides: Any
) -> tuple[Any, LagrangianCallback, Probe]:
    trainer, callback = make_lagrangian(
        TRAINERS[kind][0],
        policy_dir,
        reward=distinct_reward,
        cost=cost if cost is not None else RecordingCost(),
        args=make_args(kind, out, **overrides),
        dual=dual,
        train_dataset=prompts(),
        processing_class=tiny_tokenizer(),
    )
    probe = Probe(callback)
    trainer.add_callback(probe)
    return trainer, callback, probe


def projected(lam0: float, lr: float, limit: float) -> DualConfig:
    """Projected rule on the current batch only: λ ← max(0, λ + η(mean(c) − d))."""
    return DualConfig(
        multiplier="projected", lambda_init=lam0, lambda_lr=lr, cost_limit=limit, cost_window=0
    )


def step_logs(trainer: Any) -> list[dict[str, float]]:
    return [entry for entry in trainer.state.log_history if "loss" in entry]


@pytest.mark.parametrize("kind", ["grpo", "rloo"])
def test_weight_tracks_lambda_and_matches_hand_update(kind: str, policy_dir: str, tmp_path: Path):
    """After every step, reward_weights[cost] = −λ and λ_k = max(0, λ_{k−1} + η(mean c_k − d)).

    c_k are the raw costs of the k-th generation batch (one per step in TRL's default setting).
    The logged ``reward`` of step k is TRL's Σ_j w_j r_j at scoring time, so it must equal
    mean r − λ_{k−1} · mean c: the batch of step k was scored with the λ of step k − 1.
    """
    lam0, lr, limit = 0.2, 0.5, -0.3
    trainer, callback, probe = build(kind, policy_dir, tmp_path, projected(lam0, lr, limit))
    cost = callback.cost_fn.scorer
    assert callback.cost_index == 1
    assert float(trainer.reward_weights[1]) == pytest.approx(-lam0)
    trainer.train()

    assert len(cost.calls) == 3 and len(probe.steps) == 3
    lam = lam0
    logs = step_logs(trainer)
    for k, (costs, (weight, lam_k), log) in enumerate(zip(cost.calls, probe.steps, logs)):
        expected = max(0.0, lam + lr * (sum(costs) / len(costs) - limit))
        assert lam_k == pytest.approx(expected, abs=1e-12), f"step {k + 1}"
        assert weight == pytest.approx(-lam_k, rel=1e-6)
        assert log["dual/lambda"] == pytest.approx(lam_k)
        assert log["constraint/violation"] == pytest.approx(sum(costs) / len(costs) - limit)
        assert log[BATCH_COST_KEY] == pytest.approx(sum(costs) / len(costs), abs=1e-6)
        scored = log["rewards/reward/mean"] - lam * log["rewards/cost/mean"]
        assert log["reward"] == pytest.approx(scored, abs=1e-5)
        lam = lam_k
    # Costs sit well above d = −0.3 for a random policy, so λ rose.
    assert lam > lam0


def test_lambda_falls_to_zero_below_the_limit(policy_dir: str, tmp_path: Path):
    """RLOO on conversational prompts with tiny score models; c ≤ 0.5 < d = 1 so λ → 0."""
    reward = TextScorer(ScoreModel.from_backbone("tiny-encoder", "reward", seed=1), progress=False)

    def bounded_cost(prompts: list[str], responses: list[str], contexts: Any) -> Any:
        assert all(p.startswith("Question") for p in prompts)  # the final user turn
        assert contexts == [[{"role": "system", "content": "Be brief."}]] * len(prompts)
        return byte_mean_cost(prompts, responses, contexts)

    trainer, callback = make_lagrangian(
        RLOOTrainer,
        policy_dir,
        reward=reward,
        cost=bounded_cost,
        args=make_args("rloo", tmp_path),
        dual=projected(0.6, 0.5, 1.0),
        train_dataset=prompts(conversational=True),
        processing_class=tiny_tokenizer(),
    )
    trainer.train()
    lams = [log["dual/lambda"] for log in step_logs(trainer)]
    assert lams[0] < 0.6 and all(b <= a for a, b in itertools.pairwise(lams))
    assert lams[-1] == 0.0 and callback.lam == 0.0
    assert float(trainer.reward_weights[1]) == 0.0


def test_score_function_reads_conversations_like_text_scorer():
    """Final user turn → prompt, earlier turns → contexts, assistant text → response."""
    scorer = TextScorer(ScoreModel.from_backbone("tiny-encoder", "cost", seed=0), progress=False)
    convo = [
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}],
        [{"role": "user", "content": [{"type": "text", "text": "Why?"}]}],
    ]
    replies = [
        [{"role": "assistant", "content": "Hello."}],
        [{"role": "assistant", "content": "x"}],
    ]
    texts, responses, contexts = to_scorer_inputs(convo, replies)
    assert texts == ["Hi?", "Why?"] and responses == ["Hello.", "x"]
    assert contexts == [[{"role": "system", "content": "Be brief."}], []]
    got = ScoreFunction(scorer, "cost")(prompts=convo, completions=replies, completion_ids=None)
    want = scorer.score(["Hi?", "Why?"], ["Hello.", "x"], contexts)
    assert got == pytest.approx(want.tolist())
    plain = ScoreFunction(scorer)(prompts=["Hi?"], completions=["Hello."])
    assert plain == pytest.approx(scorer.score(["Hi?"], ["Hello."]).tolist())
    with pytest.raises(ValueError, match="end with a user turn"):
        to_scorer_inputs([[{"role": "assistant", "content": "x"}]], ["y"])


def test_lambda_moves_once_per_generation_batch(policy_dir: str, tmp_path: Path):
    """steps_per_generation = 2: completions are drawn at steps 1 and 3, so λ moves only there.

    The dual step index is the generation-batch count ⌈k / 2⌉ (here 1 and 2), and step 2, which
    reuses step 1's completions, leaves λ and the weight alone.
    """
    lam0, lr, limit = 0.2, 0.5, -0.3
    dual = projected(lam0, lr, limit)
    trainer, callback, probe = build(
        "grpo", policy_dir, tmp_path, dual, max_steps=4, steps_per_generation=2
    )
    trainer.train()
    cost = callback.cost_fn.scorer
    assert len(cost.calls) == 2 and len(probe.steps) == 4
    mean = [sum(c) / len(c) for c in cost.calls]
    lam1 = max(0.0, lam0 + lr * (mean[0] - limit))
    lam3 = max(0.0, lam1 + lr * (mean[1] - limit))
    lams = [lam for _, lam in probe.steps]
    assert lams == pytest.approx([lam1, lam1, lam3, lam3], abs=1e-12)
    assert [w for w, _ in probe.steps] == pytest.approx([-lam for lam in lams], rel=1e-6)


def test_checkpoint_saves_and_resume_restores_lambda(policy_dir: str, tmp_path: Path):
    """primal_dual.json in each checkpoint; a new trainer resumes at the saved λ; no file: error."""
    dual = projected(0.0, 0.5, -1.0)
    first, callback, _ = build(
        "grpo", policy_dir, tmp_path, dual, max_steps=2, save_strategy="steps", save_steps=2
    )
    first.train()
    checkpoint = tmp_path / "checkpoint-2"
    saved = json.loads((checkpoint / DUAL_STATE_NAME).read_text())
    assert saved["global_step"] == 2
    lam_saved = callback.lam
    assert lam_saved > 0.0

    second, resumed, probe = build("grpo", policy_dir, tmp_path, dual, max_steps=3)
    assert resumed.lam == 0.0
    second.train(resume_from_checkpoint=True)  # the last checkpoint, checkpoint-2
    assert probe.begin == (pytest.approx(-lam_saved, rel=1e-6), pytest.approx(lam_saved))
    assert len(probe.steps) == 1 and second.state.global_step == 3
    assert resumed.lam > lam_saved  # it went on from the saved λ (costs are above d = −1)

    bare = tmp_path / "bare" / "checkpoint-2"
    shutil.copytree(checkpoint, bare)
    (bare / DUAL_STATE_NAME).unlink()
    third, _, _ = build("grpo", policy_dir, tmp_path / "third", dual, max_steps=3)
    with pytest.raises(FileNotFoundError, match="no multiplier state"):
        third.train(resume_from_checkpoint=str(bare))
    # Bypassing the attached train() must not silently restart λ either.
    fourth, _, _ = build("grpo", policy_dir, tmp_path / "fourth", dual, max_steps=3)
    with pytest.raises(RuntimeError, match="multiplier state of that step was not restored"):
        GRPOTrainer.train(fourth, resume_from_checkpoint=str(checkpoint))


def test_missing_or_unexpected_reward_weights_fail_loudly(policy_dir: str, tmp_path: Path):
    dual = projected(0.1, 0.5, 0.0)
    callback = LagrangianCallback(byte_mean_cost, dual=dual)
    trainer = GRPOTrainer(
        policy_dir,
        reward_funcs=[ScoreFunction(distinct_reward), callback.cost_fn],
        args=make_args("grpo", tmp_path),
        train_dataset=prompts(),
        processing_class=tiny_tokenizer(),
    )
    del trainer.reward_weights
    with pytest.raises(RewardWeightsError, match="reward_weights is missing"):
        callback.attach(trainer)
    trainer.reward_weights = torch.ones(3)
    with pytest.raises(RewardWeightsError, match=r"Tensor \(3,\)"):
        callback.attach(trainer)
    trainer.reward_weights = torch.ones(2)
    callback.attach(trainer)
    assert trainer.reward_weights.tolist() == pytest.approx([1.0, -0.1])
    del trainer.reward_weights  # e.g. a TRL upgrade that renames it: training must stop
    with pytest.raises(RewardWeightsError):
        trainer.train()


def test_attach_checks(policy_dir: str, tmp_path: Path):
    """Unsizable dual step, β = 0, cost_fn not passed, group scaling, eval batches not recorded."""
    with pytest.raises(ValueError, match="lambda_lr is null"):
        LagrangianCallback(byte_mean_cost, dual=DualConfig())
    callback = LagrangianCallback(byte_mean_cost, dual=projected(0.0, 0.5, 0.0))

    def trainer_with(funcs: list[Any], **overrides: Any) -> GRPOTrainer:
        return GRPOTrainer(
            policy_dir,
            reward_funcs=funcs,
            args=make_args("grpo", tmp_path, **overrides),
            train_dataset=prompts(),
            processing_class=tiny_tokenizer(),
        )

    other_cost = CostFunction(byte_mean_cost)
    with pytest.raises(ValueError, match="cost_fn exactly once"):
        callback.attach(trainer_with([distinct_reward, other_cost]))
    with pytest.raises(ValueError, match="beta = 0"):
        callback.attach(trainer_with([distinct_reward, callback.cost_fn], beta=0.0))
    with pytest.raises(ValueError, match=r"reward_weights\[1\] = 2.0 is the cost function's"):
        callback.attach(
            trainer_with([distinct_reward, callback.cost_fn], reward_weights=[1.0, 2.0])
        )
    with pytest.warns(UserWarning, match="normalize_then_sum"):
        callback.attach(
            trainer_with(
                [distinct_reward, callback.cost_fn],
                multi_objective_aggregation="normalize_then_sum",
                reward_weights=[3.0, 1.0],  # the reward's own weight is the user's to set
            )
        )
    callback = LagrangianCallback(byte_mean_cost, dual=projected(0.0, 0.5, 0.0))
    trainer = trainer_with([distinct_reward, callback.cost_fn], scale_rewards="group")
    with pytest.warns(UserWarning, match="scale_rewards='group'"):
        callback.attach(trainer)
    trainer.model.eval()
    callback.cost_fn(prompts=["a"], completions=["b"])
    trainer.model.train()
    callback.cost_fn(prompts=["a"], completions=["c"])
    assert callback._pending == pytest.approx(byte_mean_cost([], ["c"], None))
