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
    assert r.gather_objects({"a": 1}) == [{"a": 1}]
    r.check_in_sync("x", [t])


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

        # objects of any size, in rank order
        assert r.gather_objects({"rank": rank, "rows": [0] * rank}) == [
            {"rank": 0, "rows": []},
            {"rank": 1, "rows": [0]},
        ]

        # sync guard: equal tensors pass, different ones fail on every process
        r.check_in_sync("weights", [torch.ones(3), torch.tensor([2.0])])
        with pytest.raises(RuntimeError, match="weights differ between the 2 processes"):
            r.check_in_sync("weights", [torch.tensor([1.0 + rank])])

        r.barrier()
    finally:
        dist.destroy_process_group()


def test_reductions_over_two_processes(tmp_path):
    mp.spawn(_two_processes, args=(str(tmp_path / "init"),), nprocs=2, join=True)
