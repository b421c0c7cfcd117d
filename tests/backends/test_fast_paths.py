"""The fast paths against the plain computations: packed rows and the sampler.

:func:`pack` is checked on a layout worked out by hand; then every quantity a trainer reads —
policy and reference log-probs, both responses of preference pairs, critic values, and the
gradients of a loss built from them — is computed by two backends over the same weights, one
with ``fast_paths`` on and one with it off, and must agree to 1e-5, under SDPA and eager
attention, with and without no-grad row groups. The sampler's fast path (longest-first
batches, a cache allocated once, a last-position prefill) must draw the very same tokens.
"""

from __future__ import annotations

import pytest
import torch

from constrained_align.backends.causal_lm.forward import packable
from constrained_align.backends.causal_lm.packing import pack
from constrained_align.backends.causal_lm.policy import CausalLMPolicy, LMSettings
from constrained_align.backends.causal_lm.sampling import RowDraws, next_token
from constrained_align.backends.causal_lm.sequences import (
    LMSequences,
    PromptBatch,
    SamplingSettings,
)
from constrained_align.backends.causal_lm.weights import FullWeights, LoraWeights
from constrained_align.config import OptimConfig
from constrained_align.models.tiny import tiny_causal_lm, tiny_tokenizer
from tests.backends.test_lm_backend import lora_model, sharp_lm

TOK = tiny_tokenizer()


def seqs(rows: list[tuple[list[int], list[int]]], width: int) -> LMSequences:
    """Right-padded (prompt, response) rows (padding id 0)."""
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    response = torch.zeros_like(ids)
    for i, (p, r) in enumerate(rows):
        n = len(p) + len(r)
        ids[i, :n] = torch.tensor(p + r)
        mask[i, :n] = 1
        response[i, len(p) : n] = 1
    texts = [""] * len(rows)
    return LMSequences(ids, mask, response.float(), texts, [[] for _ in rows], texts)


def test_pack_lays_out_each_prompt_once_with_its_responses() -> None:
    """Rows 0 and 1 share prompt [1, 2, 3]; row 2 has prompt [7]. One packed row:

    tokens    1 2 3 4 5 6 7 8 9
    position  0 1 2 3 4 3 0 1 2   (the second response restarts after the prompt)
    group     0 0 0 0 0 0 1 1 1
    segment   0 0 0 1 1 2 0 1 1

    Response token 4 is predicted from the prompt's last token (column 2), 5 from 4 (column 3),
    6 also from column 2, 8 from 7 (column 6), 9 from 8 (column 7).
    """
    packed = pack(seqs([([1, 2, 3], [4, 5]), ([1, 2, 3], [6]), ([7], [8, 9])], width=6))
    assert packed.input_ids.tolist() == [[1, 2, 3, 4, 5, 6, 7, 8, 9]]
    assert packed.position_ids.tolist() == [[0, 1, 2, 3, 4, 3, 0, 1, 2]]
    assert packed.group.tolist() == [[0, 0, 0, 0, 0, 0, 1, 1, 1]]
    assert packed.segment.tolist() == [[0, 0, 0, 1, 1, 2, 0, 1, 1]]
    assert packed.target.tolist() == [3, 4, 5, 7, 8]
    assert packed.source.tolist() == [2, 3, 2, 6, 7]
    assert packed.seq.tolist() == [0, 0, 1, 2, 2] and packed.col.tolist() == [0, 1, 0, 0, 1]
    assert packed.shape == (3, 2)
    allowed = packed.attention_mask(slice(0, 1))[0, 0]
    assert allowed[5].nonzero().flatten().tolist() == [0, 1, 2, 5]  # not response 4, 5
    assert allowed[4].nonzero().flatten().tolist() == [0, 1, 2, 3, 4]
    assert allowed[8].nonzero().flatten().tolist() == [6, 7, 8]  # not the other group
    additive = packed.attention_mask(slice(0, 1), torch.float32)[0, 0]
    assert torch.equal(additive == 0, allowed)
    assert packed.scatter(torch.tensor([1.0, 2, 3, 4, 5])).tolist() == [[1, 2], [3, 0], [4, 5]]


def test_pack_starts_a_new_row_when_a_group_does_not_fit() -> None:
    """With 6 tokens per row, group 0 (3 + 2 + 1 tokens) fills row 0 and group 1 goes to row 1,
    whose padding belongs to no group and attends only to itself."""
    packed = pack(seqs([([1, 2, 3], [4, 5]), ([1, 2, 3], [6]), ([7], [8, 9])], 6), max_tokens=6)
    assert packed.input_ids.tolist() == [[1, 2, 3, 4, 5, 6], [7, 8, 9, 0, 0, 0]]
    assert packed.group[1].tolist() == [1, 1, 1, -1, -1, -1]
    assert packed.row.tolist() == [0, 0, 0, 1, 1] and packed.source.tolist() == [2, 3, 2, 0, 1]
    allowed = packed.attention_mask(slice(1, 2))[0, 0]
    assert allowed[4].nonzero().flatten().tolist() == [4]


def test_a_response_without_a_prompt_is_refused() -> None:
    with pytest.raises(ValueError, match="needs a prompt"):
        pack(seqs([([], [4, 5])], 2))


def test_flash_attention_takes_the_padded_layout() -> None:
    model = tiny_causal_lm(0)
    assert packable(model, LMSettings())
    assert not packable(model, LMSettings(fast_paths=False))
    model.config._attn_implementation = "flash_attention_2"
    assert not packable(model, LMSettings())


# ---- fast against plain -------------------------------------------------------------------------

PROMPTS = PromptBatch(["hi", "hello there, how are you?", "x", "hi"], [[], [], [], []])
CHOSEN = ["yes", "no way at all", "z", "sure, why not"]
REJECTED = ["no", "absolutely not, never", "zz", "y"]


def pair(kind: str, attn: str, **settings) -> tuple[CausalLMPolicy, CausalLMPolicy]:
    """Two backends over identical weights: fast paths on, and off."""
    out = []
    for fast in (True, False):
        model = lora_model() if kind == "lora" else tiny_causal_lm(0)
        model.config._attn_implementation = attn
        weights = LoraWeights(model) if kind == "lora" else FullWeights(model)
        lm = LMSettings(fast_paths=fast, **settings)
        out.append(CausalLMPolicy(weights, TOK, settings=lm, optim=OptimConfig(lr=1e-2), seed=0))
    return out[0], out[1]


def close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["lora", "full"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_logprobs_pairs_and_gradients_agree(kind: str, attn: str) -> None:
    """Policy log-probs (with gradients), reference log-probs (no-grad, two rows per group),
    pair log-probs and the gradient of a DPO-like loss agree between the layouts."""
    fast, plain = pair(kind, attn, inference_batch_size=1)
    chosen, rejected = fast.encode(PROMPTS, CHOSEN), fast.encode(PROMPTS, REJECTED)
    for reference in (True, False):
        a, b = (
            fast.logprobs(chosen, reference=reference),
            plain.logprobs(chosen, reference=reference),
        )
        close(a.token.detach(), b.token.detach())
        assert torch.equal(a.mask, b.mask)
    grads = []
    for backend in (fast, plain):
        lp_c, lp_r = backend.pair_logprobs(chosen, rejected)
        loss = -torch.nn.functional.logsigmoid(lp_c.sequence - lp_r.sequence).mean()
        loss.backward()
        trained = [p for p in backend.weights.model.parameters() if p.requires_grad]
        grads.append(torch.cat([p.grad.flatten() for p in trained]))
        ref_c, ref_r = backend.pair_logprobs(chosen, rejected, reference=True)
        grads.append(
            torch.cat([lp_c.token.detach(), lp_r.token.detach(), ref_c.token, ref_r.token], 1)
        )
    close(grads[0], grads[2])
    close(grads[1], grads[3])
    assert grads[0].abs().max() > 1e-4  # the loss has a gradient to compare


def test_pair_logprobs_split_back_to_each_response() -> None:
    """On the fast path the pair is one pass; each half equals that response's own log-probs."""
    fast, _ = pair("lora", "sdpa")
    chosen, rejected = fast.encode(PROMPTS, CHOSEN), fast.encode(PROMPTS, REJECTED)
    lp_c, lp_r = fast.pair_logprobs(chosen, rejected, reference=True)
    close(lp_c.token, fast.logprobs(chosen, reference=True).token)
    close(lp_r.token, fast.logprobs(rejected, reference=True).token)
    assert lp_r.token.shape == fast.logprobs(rejected, reference=True).token.shape


def test_critic_values_and_their_gradients_agree() -> None:
    """A critic with a non-zero head gives the same values and value-loss gradients."""
    fast, plain = pair("lora", "sdpa")
    seqs_ = fast.encode(PROMPTS, CHOSEN)
    grads = []
    for backend in (fast, plain):
        backend.add_critic("cost")
        head = backend.critics.value_heads["cost"]
        with torch.no_grad():
            head.weight.copy_(torch.linspace(-1, 1, head.weight.numel()).view_as(head.weight))
        values = backend.values(seqs_, "cost")
        (values**2).sum().backward()
        grads.append(values.detach())
        grads.append(head.weight.grad.flatten().clone())
    close(grads[0], grads[2])
    close(grads[1], grads[3])
    assert grads[0].abs().max() > 1e-3


def test_sampled_rollouts_share_a_prompt_across_samples() -> None:
    """G = 3 samples of each prompt (the rollout layout): fast and plain log-probs agree."""
    fast, plain = pair("lora", "sdpa", inference_batch_size=2)
    sampled = fast.sample(PROMPTS, 3, seed=0, sampling=SamplingSettings(max_new_tokens=5))
    assert sampled.sequences.input_ids[0].tolist() != sampled.sequences.input_ids[1].tolist()
    with torch.no_grad():
        close(fast.logprobs(sampled.sequences).token, plain.logprobs(sampled.sequences).token)


# ---- the sampler --------------------------------------------------------------------------------


def test_inverse_cdf_draws_by_hand() -> None:
    """p = (.5, 0, .3, .2): cumulative (.5, .5, .8, 1). u below .5 draws token 0, u in (.5, .8)
    token 2, above .8 token 3; token 1 (probability 0) is never drawn, not even for the 2001
    values of u packed around .5."""
    logits = torch.tensor([0.5, 0.0, 0.3, 0.2]).log().clamp(min=-1e4)  # e^-1e4 = 0 exactly
    u = torch.tensor([1e-9, 0.5 - 1e-6, 0.5 + 1e-6, 0.8 - 1e-6, 0.8 + 1e-6, 1.0]).double()
    assert next_token(logits.expand(6, 4), SamplingSettings(), u).tolist() == [0, 0, 2, 2, 3, 3]
    near = torch.linspace(0.5 - 1e-3, 0.5 + 1e-3, 2001).double()
    assert 1 not in next_token(logits.expand(2001, 4), SamplingSettings(), near).tolist()
    # top-p .6 keeps {0, 2} (sorted mass before token 2 is .5 < .6), renormalised (.625, .375)
    top = next_token(
        logits.expand(2, 4), SamplingSettings(top_p=0.6), torch.tensor([0.62, 0.63]).double()
    )
    assert top.tolist() == [0, 2]


def test_row_draws_depend_on_seed_and_row_only() -> None:
    a, b = RowDraws(5, [0, 1, 2]), RowDraws(5, [2, 0])
    first_a, first_b = a.uniform(), b.uniform()
    assert first_a[2] == first_b[0] and first_a[0] == first_b[1]
    assert len(set(first_a.tolist())) == 3
    assert not torch.equal(RowDraws(6, [0]).uniform(), first_a[:1])


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_fast_sampler_draws_the_same_tokens_as_the_plain_one(temperature: float) -> None:
    """Longest-first batches of 2, a preallocated cache and a last-position-only prefill give
    the tokens of one plain batch in the given order with a growing cache (same seed). The
    context-sensitive :func:`sharp_lm` makes greedy continuations differ between prompts."""
    runs = []
    for fast, size in ((True, 2), (False, 8)):
        settings = LMSettings(fast_paths=fast, inference_batch_size=size)
        backend = CausalLMPolicy(FullWeights(sharp_lm()), TOK, settings=settings)
        settings = SamplingSettings(max_new_tokens=6, temperature=temperature)
        runs.append(backend.sample(PROMPTS, 2, seed=3, sampling=settings).sequences)
    assert torch.equal(runs[0].input_ids, runs[1].input_ids)
    assert runs[0].responses == runs[1].responses
    assert len(set(runs[0].responses)) > 1


def test_finished_rows_leave_the_running_batch() -> None:
    """With an EOS-biased head, rows end at different steps. The fast sampler drops them from
    the running batch (seen as a shrinking batch in the model's forward) and still draws the
    plain sampler's tokens, response lengths included."""
    widths: list[int] = []
    runs = []
    for fast in (True, False):
        model = sharp_lm(eos_bias=6.0)
        if fast:
            model.register_forward_hook(
                lambda _m, args, kw, _o: widths.append(len(kw["input_ids"])), with_kwargs=True
            )
        backend = CausalLMPolicy(
            FullWeights(model), TOK, settings=LMSettings(fast_paths=fast, inference_batch_size=16)
        )
        sampling = SamplingSettings(max_new_tokens=12, temperature=1.0)
        runs.append(backend.sample(PROMPTS, 4, seed=7, sampling=sampling).sequences)
    lengths = runs[1].response_mask.sum(1)
    assert len(set(lengths.tolist())) > 2  # rows really end at different steps
    assert torch.equal(runs[0].input_ids, runs[1].input_ids)
    assert torch.equal(runs[0].response_mask, runs[1].response_mask)
    assert widths[0] == 16 and min(widths) < 16 and widths == sorted(widths, reverse=True)
