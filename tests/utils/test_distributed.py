"""The cross-process reductions: sharding, and each collective on a real two-process gloo group.

The two-process checks run in processes started by ``torch.multiprocessing.spawn``; an
assertion failing in either process fails the test.
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from constrained_align.utils.distributed import ProcessGroupReductions, Reductions


def as_rank(rank: int, world: int) -> Reductions:
    r = Reductions()
    r.rank, r.world_size = rank, world
    return r


@pytest.mark.parametrize("n, world", [(8, 2), (7, 2), (10, 3), (2, 4)])
def test_shards_are_contiguous_blocks_that_cover_everything_once(n, world):
    items = list(range(n))
    shards = [as_rank(r, world).shard(items) for r in range(world)]
    assert [i for shard in shards for i in shard] == items
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def test_one_process_reductions_are_identities():
    r = Reductions()
    t = torch.arange(3.0)
    assert r.gather(t) is t and r.mean({"a": 2.0}) == {"a": 2.0} and r.is_main
    p = torch.nn.Parameter(torch.ones(2))
    p.grad = torch.full((2,), 3.0)
    r.average_gradients([p])
    r.check_in_sync("x", [t])
    assert torch.equal(p.grad, torch.full((2,), 3.0))


def _two_processes(rank: int, init_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        r = ProcessGroupReductions()
        assert (r.rank, r.world_size, r.is_main) == (rank, 2, rank == 0)

        # gather: uneven row counts, rank order, trailing dimensions kept
        mine = torch.full((2 + rank, 3), float(rank))
        assert torch.equal(r.gather(mine), torch.cat([torch.zeros(2, 3), torch.ones(3, 3)]))

        # mean of metrics: (1 + 3) / 2 and (10 + 10) / 2
        assert r.mean({"loss": 1.0 + 2 * rank, "n": 10.0}) == {"loss": 2.0, "n": 10.0}

        # averaged gradients of the per-shard mean loss == the gradient of the full-batch mean
        gen = torch.Generator().manual_seed(0)
        x, y = torch.randn(6, 4, generator=gen), torch.randn(6, generator=gen)
        w0 = torch.randn(4, generator=gen)
        w = torch.nn.Parameter(w0.clone())
        unused = torch.nn.Parameter(torch.zeros(1))  # no grad on either process
        rows = slice(3 * rank, 3 * rank + 3)
        ((x[rows] @ w - y[rows]) ** 2).mean().backward()
        r.average_gradients([w, unused])
        full = torch.nn.Parameter(w0.clone())
        ((x @ full - y) ** 2).mean().backward()
        torch.testing.assert_close(w.grad, full.grad, rtol=0, atol=1e-6)
        assert unused.grad is None

        # sync guard: equal tensors pass, different ones fail on every process
        r.check_in_sync("weights", [torch.ones(3), torch.tensor([2.0])])
        with pytest.raises(RuntimeError, match="weights differ between the 2 processes"):
            r.check_in_sync("weights", [torch.tensor([1.0 + rank])])

        # gradients on different parameters are refused on every process
        a, b = torch.nn.Parameter(torch.ones(1)), torch.nn.Parameter(torch.ones(1))
        (a if rank == 0 else b).sum().backward()
        with pytest.raises(RuntimeError, match="different parameters"):
            r.average_gradients([a, b])
        r.barrier()
    finally:
        dist.destroy_process_group()


def test_reductions_over_two_processes(tmp_path):
    mp.spawn(_two_processes, args=(str(tmp_path / "init"),), nprocs=2, join=True)
