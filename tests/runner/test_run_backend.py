"""The backend a run hands its algorithm (:mod:`constrained_align.runner.replay`): the sample
cache keyed by content, policy samples keyed by the run's tag and step count, and replay.

The tiny LoRA and full-weight backends come from the backend tests' builders.
"""

from __future__ import annotations

import io
import math

import pytest
import torch

from constrained_align.backends.causal_lm.policy import CausalLMPolicy, LMSettings
from constrained_align.runner.replay import Replay, RunBackend
from constrained_align.utils.cache import DiskCache
from tests.backends.test_lm_backend import PROMPTS, TOK, lp, nll, seqs_for
from tests.backends.test_lm_backend import policy as inner_policy


def policy(kind: str = "lora", *, cache: DiskCache, **kwargs) -> RunBackend:
    """The backend builder of the backend tests, as a run sees it (cached, untagged)."""
    return RunBackend(inner_policy(kind), cache=cache, **kwargs)


def _count_generate(backend: RunBackend, monkeypatch) -> list[int]:
    calls: list[int] = []
    inner = backend.inner.sample

    def counted(prompts, num_samples, *, reference, seed, sampling, row_ids=None):
        calls.append(seed)
        return inner(
            prompts, num_samples, reference=reference, seed=seed, sampling=sampling, row_ids=row_ids
        )

    monkeypatch.setattr(backend.inner, "sample", counted)
    return calls


def test_fresh_backend_with_the_same_seed_hits_the_sample_cache(tmp_path, monkeypatch) -> None:
    """Samples are keyed by content: the same weights, prompts, settings and seed hit the cache.

    A second, freshly built backend (same base and adapter seeds) sampling with the same seed
    reads the first one's entry (one hit, no generation) and gets the same sequences; another
    seed misses. After a step its weights changed, so the same seed misses and generates.
    """
    first = policy("lora", cache=DiskCache(tmp_path))
    want = first.sample(PROMPTS, 2, seed=7)

    cache = DiskCache(tmp_path)
    second = policy("lora", cache=cache)
    generated = _count_generate(second, monkeypatch)
    got = second.sample(PROMPTS, 2, seed=7)
    assert cache.hits == 1 and generated == []
    assert torch.equal(got.sequences.input_ids, want.sequences.input_ids)
    assert got.sequences.responses == want.sequences.responses
    second.sample(PROMPTS, 2, seed=8)  # the seed is part of the key
    assert generated == [8] and cache.hits == 1

    second.step(nll(second, seqs_for(second.inner)))
    second.sample(PROMPTS, 2, seed=7)
    assert generated == [8, 7] and cache.hits == 1


def test_run_tag_keys_policy_samples_by_step_count(tmp_path, monkeypatch) -> None:
    """With ``run_tag`` set, a policy sample's key is (tag, name, optimizer steps), not the weights.

    A backend with different weights (full fine-tuning instead of LoRA) but the same tag, name
    and step count hits the entry; after one step the key changes and the sample is drawn anew.
    """
    cache = DiskCache(tmp_path)
    first = policy("lora", cache=cache)
    first.run_tag = "run-1"
    want = first.sample(PROMPTS, 1, seed=3)

    other = policy("full", cache=cache)
    other.run_tag = "run-1"
    generated = _count_generate(other, monkeypatch)
    got = other.sample(PROMPTS, 1, seed=3)
    assert generated == [] and cache.hits == 1
    assert torch.equal(got.sequences.input_ids, want.sequences.input_ids)

    other.step(nll(other, seqs_for(other.inner)))
    other.sample(PROMPTS, 1, seed=3)
    assert generated == [3]


def test_replay_serves_cached_samples_and_refuses_a_miss(tmp_path, monkeypatch) -> None:
    """A resumed run replays from the cache; a policy-sample miss during replay is an error.

    Run A (tagged, cached) samples, steps, samples, steps, and saves its state at step 2. Run B
    arms that state: while it replays it gets A's samples from the cache without generating;
    a policy sample A never drew raises ``RuntimeError`` (a reference sample is still drawn);
    at step 2 the saved state is loaded (B's log-probs equal A's) and sampling works again.
    """
    cache = DiskCache(tmp_path)
    a = policy("lora", cache=cache)
    a.run_tag = "run"
    seqs = seqs_for(a.inner)
    drawn = []
    for _ in range(2):
        drawn.append(a.sample(PROMPTS, 1, seed=5).sequences.input_ids)
        a.step(nll(a, seqs))
    buffer = io.BytesIO()
    torch.save({"policy": a.state_dict()}, buffer)
    buffer.seek(0)

    b = policy("lora", cache=cache, replay=Replay(torch.load(buffer, weights_only=True)))
    b.run_tag = "run"
    generated = _count_generate(b, monkeypatch)
    for step in range(2):
        assert b.replaying
        assert torch.equal(b.sample(PROMPTS, 1, seed=5).sequences.input_ids, drawn[step])
        with pytest.raises(RuntimeError, match="cannot resume"):
            b.sample(PROMPTS, 1, seed=99)
        b.sample(PROMPTS, 1, seed=99, reference=True)
        assert math.isnan(b.step(nll(b, seqs)))
    assert generated == [99]  # one reference sample: keyed by the reference, not the step
    assert not b.replaying and b.steps == 2
    assert torch.equal(lp(b, seqs), lp(a, seqs))
    b.sample(PROMPTS, 1, seed=99)
    assert generated == [99, 99]


def test_sample_cache_key_covers_prompt_truncation(tmp_path) -> None:
    """Samples drawn with a 48-token prompt window are not served to a backend that keeps 8."""
    cache = DiskCache(tmp_path)
    wide = policy(cache=cache)
    wide.sample(PROMPTS, 1, reference=True, seed=0)
    settings = LMSettings(max_prompt_tokens=8, sampling=wide.inner.settings.sampling)
    narrow = RunBackend(CausalLMPolicy(wide.inner.weights, TOK, settings=settings), cache=cache)
    hits = cache.hits
    seqs = narrow.sample(PROMPTS, 1, reference=True, seed=0).sequences
    assert cache.hits == hits
    assert int((seqs.attention_mask - seqs.response_mask).sum(-1).max()) <= 8
