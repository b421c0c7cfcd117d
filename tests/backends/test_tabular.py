"""The tabular backend honours the PolicyBackend contract the algorithms rely on."""

import numpy as np
import pytest
import torch

from constrained_align.backends.tabular import TabularPolicy, TabularScorer
from constrained_align.types import PolicyBackend, Scorer

REF = np.array([[0.4, 0.2, 0.2, 0.2], [0.1, 0.2, 0.3, 0.4]])


def test_implements_the_interfaces():
    assert isinstance(TabularPolicy(REF), PolicyBackend)
    assert isinstance(TabularScorer(REF, REF), Scorer)


def test_population_sample_is_exact_expectation():
    """Weights ρ_x·π(y|x) sum to 1 and rows are prompt-major."""
    backend = TabularPolicy(REF, mode="population")
    s = backend.sample(backend.all_prompts(), 7)
    assert len(s) == 8
    assert s.weight.sum().item() == pytest.approx(1.0)
    np.testing.assert_allclose(s.weight.view(2, 4).numpy(), 0.5 * REF)
    assert s.group.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    np.testing.assert_allclose(s.logprobs.sequence.exp().numpy(), REF.reshape(-1))


def test_sampled_mode_is_seeded_and_prompt_major():
    a = TabularPolicy(REF, mode="sampled", seed=3).sample(torch.arange(2), 5)
    b = TabularPolicy(REF, mode="sampled", seed=3).sample(torch.arange(2), 5)
    assert torch.equal(a.sequences.response, b.sequences.response)
    assert a.sequences.prompt.tolist() == [0] * 5 + [1] * 5
    assert torch.all(a.weight == 1.0)


def test_step_fork_and_reference_swap():
    backend = TabularPolicy(REF)
    s = backend.sample(backend.all_prompts(), 1)
    # Maximise log π(y=0 | x=0): one step must raise it.
    before = backend.policy()[0, 0]
    backend.step(lambda: -backend.logprobs(s.sequences).token[0, 0])
    assert backend.policy()[0, 0] > before
    fork = backend.fork()
    np.testing.assert_allclose(fork.policy(), REF)
    backend.set_reference_to_policy()
    ref_now = backend.logprobs(s.sequences, reference=True).sequence.exp()
    np.testing.assert_allclose(ref_now.numpy(), backend.policy().reshape(-1))


def test_state_dict_round_trip():
    a = TabularPolicy(REF, seed=1)
    s = a.sample(a.all_prompts(), 1)
    a.step(lambda: -a.logprobs(s.sequences).sequence.mean())
    b = TabularPolicy(REF, seed=9)
    b.load_state_dict(a.state_dict())
    for backend in (a, b):
        backend.step(lambda backend=backend: -backend.logprobs(s.sequences).sequence.mean())
    np.testing.assert_allclose(a.policy(), b.policy())
