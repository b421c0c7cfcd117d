"""``ConstrainedDPOTrainer`` beside stock ``DPOTrainer``, option by option.

``loss="dpo"`` is stock: on the same batch, every ``DPOConfig`` option gives stock's loss,
gradients and metrics (to 1e-6), on a dense tiny Llama and on a tiny Mixture-of-Experts model
whose router auxiliary loss is on. The constrained losses log stock's metrics with stock's
values for everything that depends on the policy alone, add the MoE router loss as stock does,
take TRL's ``sft`` term beside them, put the Lagrangian soft label into the hinge and IPO terms
as derived in :mod:`constrained_align.integrations.trl.dpo_options`, and refuse the rest with
the option's name.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import MixtralConfig, MixtralForCausalLM
from trl import DPOTrainer

from constrained_align.integrations.trl import ConstrainedDPOTrainer
from constrained_align.models.tiny import tiny_causal_lm, tiny_tokenizer
from constrained_align.primal_dual import BatchMean, Constraint, Fixed, PrimalDual
from tests.integrations.test_trl_dpo import (
    BETA,
    canonical_rows,
    hand_logratios,
    make_args,
    stock_rows,
)

TOK = tiny_tokenizer()

#: DPOConfig options, each tried with loss="dpo" against stock.
OPTIONS = {
    "sigmoid": {},
    "weighted mix": {"loss_type": ["sigmoid", "sft", "ipo"], "loss_weights": [1.0, 0.5, 0.25]},
    **{
        kind: {"loss_type": [kind]}
        for kind in ("hinge", "ipo", "nca_pair", "bco_pair", "sppo_hard", "aot_unpaired")
    },
    **{kind: {"loss_type": [kind]} for kind in ("apo_zero", "apo_down", "discopop", "sft")},
    "sigmoid_norm": {"loss_type": ["sigmoid_norm"]},
    "aot": {"loss_type": ["aot"], "label_smoothing": 0.1},
    "robust": {"loss_type": ["robust"], "label_smoothing": 0.1},
    "exo_pair": {"loss_type": ["exo_pair"], "label_smoothing": 0.2},
    "forward_kl": {"f_divergence_type": "forward_kl"},
    "js_divergence": {"f_divergence_type": "js_divergence"},
    "alpha_divergence": {"f_divergence_type": "alpha_divergence", "f_alpha_divergence_coef": 0.5},
    "ld_alpha": {"ld_alpha": 0.5},
    "wpo": {"use_weighting": True},
    "precomputed reference": {"precompute_ref_log_probs": True},
}


def moe_model(seed: int) -> MixtralForCausalLM:
    """A tiny Mixtral (4 experts, 2 per token) with the router auxiliary loss on."""
    torch.manual_seed(seed)
    config = MixtralConfig(
        vocab_size=len(TOK),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        num_local_experts=4,
        num_experts_per_tok=2,
        router_aux_loss_coef=0.05,
        output_router_logits=False,
        max_position_embeddings=256,
        pad_token_id=TOK.pad_token_id,
        eos_token_id=TOK.eos_token_id,
        bos_token_id=TOK.bos_token_id,
    )
    return MixtralForCausalLM(config).eval()


def build(cls, tmp_path, rows, *, moe: bool = False, options=None, **kwargs):
    make = moe_model if moe else tiny_causal_lm
    return cls(
        make(0),
        ref_model=make(1),
        args=make_args(tmp_path, **(options or {})),
        train_dataset=Dataset.from_list(rows),
        processing_class=TOK,
        **kwargs,
    )


def step(trainer, n: int = 4) -> tuple[float, list[torch.Tensor], dict[str, float]]:
    """Loss, gradients and logged metrics of one training-mode pass over the first batch."""
    batch = trainer._prepare_inputs(
        trainer.data_collator([trainer.train_dataset[i] for i in range(n)])
    )
    trainer.model.train()
    trainer.model.zero_grad()
    loss = trainer.compute_loss(trainer.model, dict(batch))
    loss.backward()
    grads = [p.grad.detach().clone() for p in trainer.model.parameters() if p.grad is not None]
    metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    return float(loss), grads, metrics


def assert_same(a, b) -> None:
    loss_a, grads_a, metrics_a = a
    loss_b, grads_b, metrics_b = b
    assert loss_a == pytest.approx(loss_b, abs=1e-6)
    assert len(grads_a) == len(grads_b) > 0
    for g, h in zip(grads_a, grads_b):
        torch.testing.assert_close(g, h, rtol=0, atol=1e-6)
    assert metrics_a.keys() == metrics_b.keys()
    for key in metrics_a:
        assert metrics_a[key] == pytest.approx(metrics_b[key], abs=1e-6), key


@pytest.mark.parametrize("name", list(OPTIONS))
def test_dpo_is_stock_for_every_option(tmp_path, name):
    rows = canonical_rows(4)
    options = OPTIONS[name]
    stock = step(build(DPOTrainer, tmp_path, stock_rows(rows), options=options))
    ours = step(build(ConstrainedDPOTrainer, tmp_path, rows, options=options, loss="dpo"))
    assert_same(ours, stock)


def test_dpo_is_stock_on_a_mixture_of_experts_with_the_router_loss(tmp_path):
    rows = canonical_rows(4)
    stock_trainer = build(DPOTrainer, tmp_path, stock_rows(rows), moe=True)
    assert stock_trainer.aux_loss_enabled
    stock = step(stock_trainer)
    assert stock[2]["aux_loss"] > 0
    assert_same(step(build(ConstrainedDPOTrainer, tmp_path, rows, moe=True, loss="dpo")), stock)


def fixed(lam: float) -> PrimalDual:
    return PrimalDual({"cost": Constraint(Fixed(value=lam), BatchMean(), cost_limit=0.0)})


CONSTRAINED = {
    "lagrangian": {"primal_dual": fixed(0.7), "temperature": 2.0},
    "safe_dpo": {"delta": 3.0},
    "bfpo": {},
}


@pytest.mark.parametrize("loss", list(CONSTRAINED))
def test_constrained_losses_log_stock_metrics_and_add_the_router_loss(tmp_path, loss):
    rows = canonical_rows(4)
    stock = step(build(DPOTrainer, tmp_path, stock_rows(rows), moe=True))
    ours = step(
        build(ConstrainedDPOTrainer, tmp_path, rows, moe=True, loss=loss, **CONSTRAINED[loss])
    )
    policy_only = ("entropy", "logits/chosen", "logits/rejected", "mean_token_accuracy")
    policy_only += ("logps/chosen", "logps/rejected", "rewards/margins", "aux_loss")
    for key in policy_only:
        assert ours[2][key] == pytest.approx(stock[2][key], abs=1e-6), key
    assert set(stock[2]) <= set(ours[2])
    without_router = build(
        ConstrainedDPOTrainer,
        tmp_path,
        rows,
        moe=True,
        options={"router_aux_loss_coef": 0.0},
        loss=loss,
        **CONSTRAINED[loss],
    )
    assert not without_router.aux_loss_enabled
    coef_times_aux = 0.05 * ours[2]["aux_loss"]
    assert ours[0] - step(without_router)[0] == pytest.approx(coef_times_aux, abs=1e-6)


def lagrangian_label(rows) -> torch.Tensor:
    """p = σ(((r_c − 0.7c_c) − (r_r − 0.7c_r))/2) of the rows (chosen = the better one)."""
    p = []
    for row in rows:
        c, r = row["better_response_id"], 1 - row["better_response_id"]
        margin = (row[f"reward_{c}"] - 0.7 * row[f"cost_{c}"]) - (
            row[f"reward_{r}"] - 0.7 * row[f"cost_{r}"]
        )
        p.append(torch.sigmoid(torch.tensor(margin / 2.0, dtype=torch.float64)))
    return torch.stack(p)


@pytest.mark.parametrize("main", ["hinge", "ipo"])
def test_the_lagrangian_soft_label_in_the_hinge_and_ipo_terms(tmp_path, main):
    rows = canonical_rows(4)
    trainer = build(
        ConstrainedDPOTrainer,
        tmp_path,
        rows,
        options={"loss_type": [main, "sft"], "loss_weights": [1.0, 0.3]},
        loss="lagrangian",
        **CONSTRAINED["lagrangian"],
    )
    batch = trainer._prepare_inputs(
        trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    )
    l_c, l_r = hand_logratios(trainer, batch).chunk(2)
    p = lagrangian_label(rows)
    if main == "hinge":
        z = BETA * (l_c - l_r)
        expected = (p * F.relu(1 - z) + (1 - p) * F.relu(1 + z)).mean()
    else:
        n_c, n_r = batch["completion_mask"].sum(1).double().chunk(2)
        expected = ((l_c / n_c - l_r / n_r - (p - 0.5) / BETA) ** 2).mean()
    # TRL's sft term: the mean NLL over the chosen completions' tokens
    trainer.model.eval()
    with torch.no_grad():
        logits = trainer.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).logits
    logp = F.log_softmax(logits[:, :-1].double(), -1).gather(-1, batch["input_ids"][:, 1:, None])
    chosen_mask = batch["completion_mask"][:, 1:].chunk(2)[0].bool()
    sft = -logp.squeeze(-1).chunk(2)[0][chosen_mask].mean()
    with torch.no_grad():
        loss = float(trainer.compute_loss(trainer.model, dict(batch)))
    assert loss == pytest.approx(float(expected + 0.3 * sft), abs=1e-5)


REFUSED = [
    ("lagrangian", {"loss_type": ["robust"], "label_smoothing": 0.1}, "loss_type"),
    ("safe_dpo", {"loss_type": ["ipo"]}, "loss_type"),
    ("bfpo", {"loss_type": ["sigmoid", "hinge"]}, "loss_type"),
    ("lagrangian", {"f_divergence_type": "forward_kl"}, "f_divergence_type"),
    ("safe_dpo", {"ld_alpha": 0.5}, "ld_alpha"),
    ("bfpo", {"use_weighting": True}, "use_weighting"),
    ("lagrangian", {"label_smoothing": 0.1}, "label_smoothing"),
]


@pytest.mark.parametrize(("loss", "options", "option"), REFUSED)
def test_options_without_a_defined_combination_are_refused_by_name(tmp_path, loss, options, option):
    with pytest.raises(ValueError, match=f"does not combine with.*{option}"):
        build(
            ConstrainedDPOTrainer,
            tmp_path,
            canonical_rows(2),
            options=options,
            loss=loss,
            **CONSTRAINED[loss],
        )
