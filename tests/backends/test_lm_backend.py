"""The causal-LM backend: sampling, encoding, reference handling, forks, critics, checkpoints.

Models are built in code (:mod:`constrained_align.models.tiny`: hidden 32, 2 layers, a byte-level
tokenizer), so every expectation below can be derived from the tokenizer's bytes or from an
independent forward pass of the same weights.

The randomly initialised tiny Llama is nearly uniform and, with tied embeddings, greedily repeats
its last token whatever the context, which would make a greedy-decoding test pass even with a
broken attention mask. :func:`sharp_lm` therefore gives it an untied, larger head and sharper
attention, so the greedy token depends on the whole (correctly masked) context.
"""

from __future__ import annotations

import io
import math

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from constrained_align.backends.causal_lm.logprobs import naive_token_logprobs
from constrained_align.backends.causal_lm.policy import CausalLMPolicy, LMSettings
from constrained_align.backends.causal_lm.sampling import (
    RowDraws,
    SamplingSettings,
    next_token,
    sample_responses,
)
from constrained_align.backends.causal_lm.sequences import LMSequences, PromptBatch, pad_rows
from constrained_align.backends.causal_lm.weights import FullWeights, LoraWeights
from constrained_align.config import OptimConfig
from constrained_align.data.chat import render_prompt
from constrained_align.models.tiny import tiny_causal_lm, tiny_tokenizer

TOK = tiny_tokenizer()
EOS = TOK.eos_token_id  # 257
PAD = TOK.pad_token_id  # 256, distinct from EOS
VOCAB = len(TOK)
PROMPTS = PromptBatch(["hi", "hello there, how are you?", "x"], [[], [], []])


# ---- builders ---------------------------------------------------------------------------------


def lora_model(seed: int = 0, adapter_seed: int = 1) -> nn.Module:
    """The tiny Llama wrapped in a rank-4 LoRA on q/v (adapter init seeded separately)."""
    model = tiny_causal_lm(seed)
    torch.manual_seed(adapter_seed)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    return get_peft_model(model, config)


def sharp_lm(seed: int = 0, *, eos_bias: float | None = None) -> nn.Module:
    """A tiny Llama whose next token depends on the context, optionally with an EOS-biased head.

    The head is untied, ``N(0, 25/H)`` (logits of standard deviation ≈ 5), and the attention
    projections are scaled up so attention is far from uniform. ``eos_bias`` adds an
    ``nn.Linear`` bias that is zero except ``eos_bias`` on EOS.
    """
    model = tiny_causal_lm(seed)
    g = torch.Generator().manual_seed(seed + 100)
    head = nn.Linear(32, VOCAB, bias=eos_bias is not None)
    with torch.no_grad():
        head.weight.copy_(torch.randn(VOCAB, 32, generator=g) * 5 / math.sqrt(32))
        if eos_bias is not None:
            head.bias.zero_()
            head.bias[EOS] = eos_bias
        for layer in model.model.layers:
            attn = layer.self_attn
            for proj, scale in ((attn.q_proj, 20), (attn.k_proj, 20), (attn.v_proj, 10)):
                proj.weight.mul_(scale)
            attn.o_proj.weight.mul_(10)
    model.lm_head = head
    return model


def policy(kind: str = "lora", *, seed: int = 0, **sampling) -> CausalLMPolicy:
    """A backend over the tiny Llama (LoRA or full weights), Adam at lr 1e-2."""
    weights = LoraWeights(lora_model()) if kind == "lora" else FullWeights(tiny_causal_lm(0))
    settings = LMSettings(sampling=SamplingSettings(**{"max_new_tokens": 6, **sampling}))
    optim = OptimConfig(name="adam", lr=1e-2)
    return CausalLMPolicy(weights, TOK, settings=settings, optim=optim, seed=seed)


def seqs_for(backend: CausalLMPolicy, responses: tuple[str, ...] = ("yes", "no way", "z")):
    """Dataset (prompt, response) rows for :data:`PROMPTS`."""
    return backend.encode(PROMPTS, list(responses))


def nll(backend: CausalLMPolicy, seqs: LMSequences):
    """A closure: the mean negative sequence log-likelihood (moves the policy quickly)."""
    return lambda: -backend.logprobs(seqs).sequence.mean()


def lp(backend: CausalLMPolicy, seqs: LMSequences, *, reference: bool = False) -> torch.Tensor:
    """Detached ``(B, T)`` token log-probs (response coordinates)."""
    return backend.logprobs(seqs, reference=reference).token.detach()


def prompt_ids(prompt: str) -> list[int]:
    """Token ids of a single-turn prompt rendered with the chat template (untruncated)."""
    return TOK(render_prompt(TOK, prompt), add_special_tokens=False)["input_ids"]


def uniform(n: int, seed: int) -> torch.Tensor:
    """``n`` seeded float64 numbers in (0, 1], as the sampler draws them."""
    return 1 - torch.rand(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def close(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-5) -> None:
    torch.testing.assert_close(a, b, atol=atol, rtol=0)


def moved(a: torch.Tensor, b: torch.Tensor) -> bool:
    """True when two log-prob tensors differ by more than numerical noise."""
    return bool((a - b).abs().max() > 1e-3)


# ---- next_token ---------------------------------------------------------------------------------


def test_temperature_zero_is_argmax() -> None:
    """Temperature 0 is greedy: the argmax of each row, whatever the generator."""
    logits = torch.tensor([[0.1, 2.0, -1.0, 1.9], [3.0, 3.5, 0.0, -2.0], [-1.0, -2.0, -0.5, -3.0]])
    greedy = SamplingSettings(temperature=0.0)
    for seed in range(3):
        assert next_token(logits, greedy, uniform(3, seed)).tolist() == [1, 1, 2]


def test_tiny_top_p_keeps_only_the_most_likely_token() -> None:
    """``top_p = 1e-6``: the nucleus is the single most likely token, so every draw is the argmax.

    200 draws per row from 8 random rows (spread-out logits, where an unrestricted draw would
    hit the argmax only rarely).
    """
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(8, 20, generator=g)
    rows = logits.repeat(200, 1)  # (1600, 20)
    got = next_token(rows, SamplingSettings(top_p=1e-6), uniform(len(rows), 1))
    assert torch.equal(got, rows.argmax(-1))
    # control: without the nucleus the same draws are not all the argmax
    free = next_token(rows, SamplingSettings(top_p=1.0), uniform(len(rows), 2))
    assert not torch.equal(free, rows.argmax(-1))


def test_top_p_one_is_reproducible_with_a_seeded_generator() -> None:
    """Same seed → the same draws; another seed → different draws (so the seed matters)."""
    logits = torch.randn(64, 30, generator=torch.Generator().manual_seed(5))
    settings = SamplingSettings(temperature=1.0, top_p=1.0)
    a = next_token(logits, settings, uniform(64, 11))
    b = next_token(logits, settings, uniform(64, 11))
    c = next_token(logits, settings, uniform(64, 12))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize(
    ("temperature", "kept"),
    [
        # p = (.5, .3, .15, .05); mass before each: 0, .5, .8, .95; top_p .7 keeps {0, 1},
        # renormalised to (.625, .375).
        (1.0, [0.625, 0.375, 0.0, 0.0]),
        # T = 2: p ∝ √p = (.70711, .54772, .38730, .22361)/1.86574 = (.37899, .29357, .20758,
        # .11985); mass before: 0, .379, .673, .880; top_p .7 keeps {0, 1, 2} (.88014),
        # renormalised to (.43061, .33355, .23585).
        (2.0, [0.43061, 0.33355, 0.23585, 0.0]),
    ],
)
def test_tokens_outside_the_nucleus_are_never_drawn(temperature: float, kept: list[float]) -> None:
    """Hand-built distribution: the nucleus (after temperature) is exact, and nothing else is drawn.

    The nucleus is the smallest prefix of tokens sorted by probability whose mass reaches
    ``top_p``. 20 000 seeded draws: tokens outside it never appear; those inside appear with
    their renormalised probabilities (±0.015, about 4 standard errors).
    """
    logits = torch.tensor([0.5, 0.3, 0.15, 0.05]).log().expand(20_000, 4)
    settings = SamplingSettings(temperature=temperature, top_p=0.7)
    draws = next_token(logits, settings, uniform(len(logits), 0))
    freq = torch.bincount(draws, minlength=4).float() / len(draws)
    for token, p in enumerate(kept):
        if p == 0.0:
            assert freq[token] == 0.0
        else:
            assert freq[token].item() == pytest.approx(p, abs=0.015)


def test_top_p_zero_keeps_the_first_token() -> None:
    """``top_p = 0`` must still keep the most likely token (the code's own comment says so).

    Expected: the argmax (as HF's top-p warper, which always keeps one token). Got: RuntimeError.
    """
    logits = torch.tensor([[0.0, 2.0, 1.0], [3.0, 0.0, 1.0]])
    got = next_token(logits, SamplingSettings(top_p=0.0), uniform(2, 0))
    assert got.tolist() == [1, 0]


# ---- sample_responses ---------------------------------------------------------------------------


def _left_padded_prompts() -> tuple[torch.Tensor, torch.Tensor]:
    rows = [prompt_ids(p) for p in PROMPTS.prompts]
    ids = pad_rows(rows, PAD, left=True)
    lengths = torch.tensor([len(r) for r in rows])
    mask = (torch.arange(ids.shape[1]) >= ids.shape[1] - lengths[:, None]).long()
    assert len(set(lengths.tolist())) == 3  # really ragged: left padding is exercised
    return ids, mask


def test_sample_responses_stops_each_row_at_its_eos() -> None:
    """A row ends at its first EOS (kept), then only padding follows; the loop ends when all end.

    Greedy decoding is deterministic, so a first run with an EOS the model never emits gives
    each row's full greedy continuation ``g``. Decoding again with a set ``E`` of EOS ids, row
    ``i`` must equal ``g_i`` up to and including its first token in ``E`` (step ``s_i``), be
    ``pad`` afterwards, with the live mask 1 exactly on steps ``≤ s_i``; a row with no token of
    ``E`` runs to ``max_new_tokens = 8``. The output is ``8`` wide if some row runs to the end,
    else ``max_i s_i + 1`` (decoding stops once every row has ended).

    Case 1: ``E`` = the token row 0 first emits at step ``k ≥ 2`` (so ``s_0 = k``; the other
    rows stop wherever it first occurs in them, if anywhere). Case 2: ``E`` adds each other
    row's step-3 token, so every row ends by step 3 and the output is at most 4 wide.
    """
    model = sharp_lm()
    ids, mask = _left_padded_prompts()
    greedy = SamplingSettings(max_new_tokens=8, temperature=0.0)
    kwargs = dict(settings=greedy, pad_id=PAD, draws=RowDraws(0, [0, 1, 2]))
    full, live = sample_responses(model, ids, mask, eos_ids=[TOK.unk_token_id], **kwargs)
    assert full.shape == (3, 8) and torch.all(live == 1)
    rows = full.tolist()
    k = next(t for t in range(2, 8) if rows[0][t] not in rows[0][:t])

    for eos in ([rows[0][k]], [rows[0][k], rows[1][3], rows[2][3]]):
        out, live = sample_responses(model, ids, mask, eos_ids=eos, **kwargs)
        stops = [next((t for t, x in enumerate(g) if x in eos), None) for g in rows]
        assert stops[0] == k
        width = 8 if None in stops else max(stops) + 1
        assert out.shape == live.shape == (3, width)
        for i, s in enumerate(stops):
            end = width if s is None else s + 1
            assert out[i, :end].tolist() == rows[i][:end]
            assert torch.all(out[i, end:] == PAD)
            assert live[i].tolist() == [1.0] * end + [0.0] * (width - end)
    assert width <= 4  # case 2 ended early


def test_greedy_kv_cache_decoding_agrees_with_the_full_forward() -> None:
    """Greedy tokens of left-padded prompts of three lengths in one batch are full-forward argmaxes.

    For each returned row (prompt then response, unpadded), one forward pass without cache or
    padding gives logits at every position; each response token must be the argmax at the
    position before it, and ``CausalLMPolicy.logprobs`` must score it with the maximum
    log-probability of that distribution. This checks the KV cache, the left-padding attention
    mask and the position ids of the sampler against the plain forward the log-probs use.
    """
    backend = CausalLMPolicy(
        FullWeights(sharp_lm()),
        TOK,
        settings=LMSettings(sampling=SamplingSettings(max_new_tokens=8, temperature=0.0)),
    )
    samples = backend.sample(PROMPTS, 2, seed=0)
    seqs = samples.sequences
    scored = lp(backend, seqs)
    with torch.no_grad():
        for i in range(len(seqs)):
            length = int(seqs.attention_mask[i].sum())
            row = seqs.input_ids[i, :length]
            logits = backend.weights.model(input_ids=row[None]).logits[0]  # (length, V)
            where = seqs.response_mask[i, :length].nonzero().squeeze(-1)
            assert len(where) == 8
            prev = logits[where - 1]
            assert row[where].tolist() == prev.argmax(-1).tolist()
            best = torch.log_softmax(prev, -1).max(-1).values
            close(scored[i, : len(where)], best)  # response coordinates: column t = token t
    # the generated continuations really depend on the prompt (not a constant token stream)
    responses = seqs.input_ids[seqs.response_mask.bool()].view(6, 8)
    assert len({tuple(r) for r in responses.tolist()}) > 1


# ---- CausalLMPolicy.sample ----------------------------------------------------------------------


def test_sample_is_seeded_prompt_major_and_bounded() -> None:
    """Seeds, layout and length of ``sample``.

    Same seed on a fresh backend → identical tokens and texts; another seed → different ones;
    the two samples of a prompt differ (independent draws). Rows are prompt-major:
    ``group = [0, 0, 1, 1, 2, 2]``, weight 1, ``prompts`` repeated, and each row's prompt tokens
    decode to its own rendered prompt. No response is longer than ``max_new_tokens = 6``, and a
    response without EOS has exactly 6 tokens.
    """
    a = policy().sample(PROMPTS, 2, seed=3)
    b = policy().sample(PROMPTS, 2, seed=3)
    c = policy().sample(PROMPTS, 2, seed=4)
    assert torch.equal(a.sequences.input_ids, b.sequences.input_ids)
    assert a.sequences.responses == b.sequences.responses
    assert not torch.equal(a.sequences.input_ids, c.sequences.input_ids)
    assert a.sequences.responses[0] != a.sequences.responses[1]

    assert a.group.tolist() == [0, 0, 1, 1, 2, 2]
    assert torch.equal(a.weight, torch.ones(6))
    assert a.sequences.prompts == [p for p in PROMPTS.prompts for _ in range(2)]
    seqs = a.sequences
    for i in range(6):
        prompt_len = int(seqs.response_mask[i].nonzero()[0])
        text = TOK.decode(seqs.input_ids[i, :prompt_len])
        assert text == render_prompt(TOK, PROMPTS.prompts[i // 2])
        response = seqs.input_ids[i][seqs.response_mask[i].bool()].tolist()
        assert len(response) == 6 or (len(response) < 6 and response[-1] == EOS)


def test_sample_without_seed_follows_the_backend_generator() -> None:
    """``seed=None`` draws the seed from the backend's generator: reproducible across fresh
    backends with the same ``seed``, different between two consecutive calls."""
    a, b = policy(seed=9), policy(seed=9)
    first = a.sample(PROMPTS, 1)
    assert torch.equal(first.sequences.input_ids, b.sample(PROMPTS, 1).sequences.input_ids)
    assert not torch.equal(first.sequences.input_ids, a.sample(PROMPTS, 1).sequences.input_ids)


def test_responses_end_at_eos_and_the_mask_stops_there() -> None:
    """Every sampled row: the response mask covers the response up to and including EOS, no more.

    An EOS bias of 8 on the head makes EOS likely but not certain, so with this seed some rows
    end early and some run to ``max_new_tokens = 10`` (both asserted). For every row: the mask
    is one contiguous run starting right after the prompt; EOS occurs in it only as the last
    token; a run without EOS is exactly 10 long; past it the ids are pad and attention is 0;
    the text is the decoded response.
    """
    backend = CausalLMPolicy(
        FullWeights(sharp_lm(eos_bias=8.0)),
        TOK,
        settings=LMSettings(sampling=SamplingSettings(max_new_tokens=10)),
    )
    seqs = backend.sample(PROMPTS, 4, seed=0).sequences
    ended, full = 0, 0
    for i in range(len(seqs)):
        prompt_len = len(prompt_ids(seqs.prompts[i]))
        where = seqs.response_mask[i].nonzero().squeeze(-1).tolist()
        n = len(where)
        assert where == list(range(prompt_len, prompt_len + n))
        response = seqs.input_ids[i, prompt_len : prompt_len + n].tolist()
        assert EOS not in response[:-1]
        if response[-1] == EOS:
            ended += n < 10
        else:
            assert n == 10
            full += 1
        assert seqs.attention_mask[i].tolist() == [1] * (prompt_len + n) + [0] * (
            seqs.input_ids.shape[1] - prompt_len - n
        )
        assert torch.all(seqs.input_ids[i, prompt_len + n :] == PAD)
        assert seqs.responses[i] == TOK.decode(response, skip_special_tokens=True).strip()
    assert ended > 0 and full > 0


# ---- encode -------------------------------------------------------------------------------------


def test_encode_truncates_prompt_start_and_response_end() -> None:
    """Prompt truncation keeps the prompt's end; response truncation keeps its start.

    The tokenizer is one token per byte. ``max_prompt_tokens = 5``: "User: hello\\nAssistant:"
    keeps "tant:". ``max_response_tokens = 4``: the reply " world" (the template's space is
    added) keeps " wor" and gets no EOS (it did not end there); " k" fits whole: " k" + EOS.
    Rows are right-padded with ``<pad>``; the response mask is 1 on exactly the response tokens.
    """
    backend = policy()
    backend.settings = LMSettings(max_prompt_tokens=5, max_response_tokens=4)
    batch = PromptBatch(["hello", "hi"], [[], []])
    seqs = backend.encode(batch, ["world", "k"])
    assert TOK.decode(seqs.input_ids[0]) == "tant: wor"
    assert TOK.decode(seqs.input_ids[1]) == "tant: k<eos><pad>"
    assert seqs.attention_mask.tolist() == [[1] * 9, [1] * 8 + [0]]
    assert seqs.response_mask.tolist() == [[0] * 5 + [1] * 4, [0] * 5 + [1] * 3 + [0]]
    assert seqs.prompts == ["hello", "hi"] and seqs.responses == ["world", "k"]

    backend.settings = LMSettings()  # long limits: nothing is cut
    whole = backend.encode(batch, ["world", "k"])
    n = int(whole.response_mask[0].nonzero()[0])
    assert TOK.decode(whole.input_ids[0, :n]) == "User: hello\nAssistant:"
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        backend.encode(batch, ["only one"])


# ---- reference log-probs ------------------------------------------------------------------------


def test_lora_reference_is_the_base_model_and_is_cached(monkeypatch) -> None:
    """The LoRA reference is the adapter-free base: exact at init, unchanged by training, cached.

    - At init (B = 0) policy and reference log-probs are bit-identical.
    - Reference log-probs equal ``log_softmax`` of an independently built, un-wrapped copy of
      the base model (same seed), computed with full logits.
    - The second reference call for the same sequences runs no forward pass (``_token_logprobs`` is
      counted) and returns the kept tensor.
    - After 3 steps the policy has moved; the reference of the same and of new sequences still
      equals the un-wrapped base.
    - ``set_reference_to_policy`` empties the cache: the next reference call runs a forward.
    """
    backend = policy("lora")
    seqs, fresh = seqs_for(backend), seqs_for(backend, ("other", "texts", "here"))
    calls = []
    inner = backend._token_logprobs
    monkeypatch.setattr(
        backend, "_token_logprobs", lambda m, s: calls.append(len(s)) or inner(m, s)
    )

    base = tiny_causal_lm(0)

    def base_lp(s: LMSequences) -> torch.Tensor:
        with torch.no_grad():
            logits = base(input_ids=s.input_ids, attention_mask=s.attention_mask).logits
        return s.to_response(naive_token_logprobs(logits, s.input_ids, s.response_mask))

    ref0 = backend.logprobs(seqs, reference=True)
    assert torch.equal(lp(backend, seqs), ref0.token)
    close(ref0.token, base_lp(seqs))
    n = len(calls)
    assert backend.logprobs(seqs, reference=True) is ref0 and len(calls) == n

    for _ in range(3):
        backend.step(nll(backend, seqs))
    assert moved(lp(backend, seqs), ref0.token)
    n = len(calls)
    assert torch.equal(lp(backend, seqs, reference=True), ref0.token) and len(calls) == n
    close(lp(backend, fresh, reference=True), base_lp(fresh))  # computed now, after training
    assert len(calls) == n + 1

    backend.set_reference_to_policy()
    n = len(calls)
    lp(backend, seqs, reference=True)
    assert len(calls) == n + 1


def test_reference_logprobs_in_inference_batches_equal_one_pass() -> None:
    """No-grad log-probs computed ``inference_batch_size`` rows at a time (each batch trimmed of
    its all-padding columns, then padded back) equal those of one pass over all rows."""
    one = policy("lora")
    many = policy("lora")
    many.settings = LMSettings(inference_batch_size=1)
    seqs = seqs_for(one)
    close(lp(many, seqs, reference=True), lp(one, seqs, reference=True))
    with torch.no_grad():
        close(lp(many, seqs), lp(one, seqs))


@pytest.mark.parametrize("kind", ["lora", "full"])
def test_set_reference_to_policy(kind: str) -> None:
    """After the swap, policy and reference both equal the pre-swap policy; training goes on.

    LoRA folds ``ΔW = s·B A`` into the base and zeroes B; full weights copy the policy into the
    frozen reference. Either way log π = log π_ref = (pre-swap log π) to 1e-5; a further step
    moves the policy while the reference stays at the pre-swap policy.
    """
    backend = policy(kind)
    seqs = seqs_for(backend)
    for _ in range(3):
        backend.step(nll(backend, seqs))
    before = lp(backend, seqs)
    assert moved(before, lp(backend, seqs, reference=True))
    backend.set_reference_to_policy()
    close(lp(backend, seqs), before)
    close(lp(backend, seqs, reference=True), before)
    backend.step(nll(backend, seqs))
    assert moved(lp(backend, seqs), before)
    close(lp(backend, seqs, reference=True), before)


def test_lora_swap_refuses_a_base_shared_by_forks() -> None:
    """Folding one adapter into a base that a fork's adapter also sits on would move the fork."""
    backend = policy("lora")
    backend.fork()
    with pytest.raises(RuntimeError, match="shared by forks"):
        backend.set_reference_to_policy()


@pytest.mark.parametrize("kind", ["lora", "full"])
def test_fork_starts_at_the_reference_and_trains_independently(kind: str) -> None:
    """A fork starts at the reference and neither fork nor parent moves the other.

    Parent trains 3 steps (log-probs ``P``). The fork's log-ratio to the reference is exactly 0
    and its reference is the parent's; the parent still gives exactly ``P``. Two fork steps move
    the fork and leave the parent at ``P``; a parent step then leaves the fork where it was.
    """
    parent = policy(kind)
    seqs = seqs_for(parent)
    for _ in range(3):
        parent.step(nll(parent, seqs))
    trained = lp(parent, seqs)
    ref = lp(parent, seqs, reference=True)

    child = parent.fork()
    assert torch.equal(lp(child, seqs), lp(child, seqs, reference=True))
    assert torch.equal(lp(child, seqs, reference=True), ref)
    assert torch.equal(lp(parent, seqs), trained)

    for _ in range(2):
        child.step(nll(child, seqs))
    child_trained = lp(child, seqs)
    assert moved(child_trained, ref)
    assert torch.equal(lp(parent, seqs), trained)

    parent.step(nll(parent, seqs))
    assert moved(lp(parent, seqs), trained)
    assert torch.equal(lp(child, seqs), child_trained)
    close(lp(child, seqs, reference=True), ref)


# ---- checkpoints --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["lora", "full"])
def test_state_dict_round_trip_resumes_bit_exactly(kind: str) -> None:
    """Save after 2 steps (through ``torch.save``, as checkpoints are), take 3 more, load, step:
    loss, log-probs and the next generator-seeded sample equal those of the uninterrupted run.

    The uninterrupted run is the same backend right after the save: step 3 there is the
    reference. Bit-exact on CPU, which needs weights, Adam moments and step count, and the
    sampling generator all restored.
    """
    backend = policy(kind)
    seqs = seqs_for(backend)
    for _ in range(2):
        backend.step(nll(backend, seqs))
    buffer = io.BytesIO()
    torch.save(backend.state_dict(), buffer)

    loss = backend.step(nll(backend, seqs))
    want, want_sample = lp(backend, seqs), backend.sample(PROMPTS, 1).sequences.input_ids
    for _ in range(3):
        backend.step(nll(backend, seqs))
    backend.sample(PROMPTS, 1)  # advances the generator
    assert moved(lp(backend, seqs), want)

    buffer.seek(0)
    backend.load_state_dict(torch.load(buffer, weights_only=True))
    assert backend.steps == 2
    assert backend.step(nll(backend, seqs)) == loss
    assert torch.equal(lp(backend, seqs), want)
    assert torch.equal(backend.sample(PROMPTS, 1).sequences.input_ids, want_sample)


def test_in_memory_state_dict_is_a_snapshot() -> None:
    """``state_dict()`` kept in memory (not written to disk) must still restore step 2 exactly.

    Expected: the step after loading equals the uninterrupted step 3. Got: the Adam moments
    in the kept dict had advanced with the later steps, so the resumed step differs.
    """
    backend = policy("lora")
    seqs = seqs_for(backend)
    for _ in range(2):
        backend.step(nll(backend, seqs))
    state = backend.state_dict()
    backend.step(nll(backend, seqs))
    want = lp(backend, seqs)
    for _ in range(3):
        backend.step(nll(backend, seqs))
    backend.load_state_dict(state)
    backend.step(nll(backend, seqs))
    assert torch.equal(lp(backend, seqs), want)


# ---- identity and critics -----------------------------------------------------------------------


def test_lora_reference_fingerprint_depends_only_on_the_base() -> None:
    """The reference of a LoRA backend is the base model; its fingerprint should hash only that.

    Expected: equal fingerprints for two adapters (different init seeds) on the same base.
    Got: different (the adapter tensors are part of the hashed state dict). Minor: only costs
    cache misses, never serves a wrong sample.
    """
    a = CausalLMPolicy(LoraWeights(lora_model(adapter_seed=1)), TOK)
    b = CausalLMPolicy(LoraWeights(lora_model(adapter_seed=2)), TOK)
    assert a.reference_fingerprint() == b.reference_fingerprint()


def test_critics_start_at_zero_share_the_base_and_train() -> None:
    """A critic is made by ``add_critic``: under LoRA an extra adapter on the shared base (the
    policy's log-probs do not move when it trains), with a zero-initialised head, so V = 0 at
    first on every response token and 0 off the response. One step on a value regression
    moves V towards its target, and a combined policy + critic loss updates both (the policy's
    graph keeps its adapter trainable while the critic's adapter is active)."""
    backend = policy("lora")
    seqs = seqs_for(backend)
    backend.add_critic("reward")
    values = backend.values(seqs, "reward")
    _, keep = seqs.response_index()
    assert values.shape == keep.shape and torch.equal(values, torch.zeros_like(values))
    assert "default_critic_reward" in backend.weights.model.peft_config
    before = lp(backend, seqs)
    target = torch.full_like(values, 2.0)

    def value_loss() -> torch.Tensor:
        v = backend.values(seqs, "reward")
        return ((v - target) ** 2 * keep).sum() / keep.sum()

    first = backend.step(value_loss)
    assert value_loss().item() < first
    assert torch.equal(lp(backend, seqs), before)  # the policy adapter did not move

    def both() -> torch.Tensor:
        return value_loss() - backend.logprobs(seqs).sequence.mean()

    backend.step(both)
    assert moved(lp(backend, seqs), before)


def test_critic_state_round_trips() -> None:
    """Critic adapters and value heads are in the backend state: a fresh backend that loads
    it gives the same values bit for bit."""
    a = policy("lora")
    seqs = seqs_for(a)
    a.add_critic("cost")
    target = torch.ones(len(seqs), seqs.response_index()[1].shape[1])
    for _ in range(2):
        a.step(lambda: ((a.values(seqs, "cost") - target) ** 2).mean())
    state = torch.load(io_roundtrip(a.state_dict()), weights_only=False)
    b = policy("lora")
    b.load_state_dict(state)
    with torch.no_grad():
        assert torch.equal(a.values(seqs, "cost"), b.values(seqs, "cost"))


def io_roundtrip(obj: object):
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return buffer


def test_builders_are_deterministic() -> None:
    """The builders are deterministic: two LoRA backends give bit-identical log-probs (the
    cache and checkpoint tests above rely on it)."""
    a, b = policy("lora"), policy("lora")
    seqs = seqs_for(a)
    assert torch.equal(lp(a, seqs), lp(b, seqs))


def test_truncated_dataset_responses_get_no_eos() -> None:
    """A response cut at max_response_tokens ends without EOS (it did not end there); a short
    one ends with EOS."""
    backend = CausalLMPolicy(
        FullWeights(tiny_causal_lm(0)), TOK, settings=LMSettings(max_response_tokens=4)
    )
    seqs = backend.encode(PROMPTS, ["a much longer reply than four tokens", "ok", "z"])
    for i, cut in enumerate((True, False, False)):
        response = seqs.input_ids[i][seqs.response_mask[i].bool()].tolist()
        assert (response[-1] == EOS) is not cut
        assert len(response) <= 4


def test_models_with_post_processed_logits_are_refused() -> None:
    model = tiny_causal_lm(0)
    model.config.logits_scaling = 8.0  # Granite-style scaling after the LM head
    with pytest.raises(ValueError, match="logits_scaling"):
        CausalLMPolicy(FullWeights(model), TOK)
