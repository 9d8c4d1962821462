"""The resumable training loader: a permutation per (seed, epoch), continued mid-epoch from its
state, sharded across ranks, and never drawing from the global random generator."""

import torch
from torch.utils.data import TensorDataset

from iresnet.data.loader import EpochBatchSampler, ResumableDataLoader


def _loader(n=23, batch=4, seed=0, epoch_batches=None) -> ResumableDataLoader:
    return ResumableDataLoader(TensorDataset(torch.arange(n)), batch, shuffle=True, drop_last=True, seed=seed,
                               epoch_batches=epoch_batches)  # fmt: skip


def _epoch(loader) -> list[list[int]]:
    return [batch[0].tolist() for batch in loader]


def test_each_epoch_is_a_new_permutation_set_by_the_seed():
    loader = _loader()
    first, second = _epoch(loader), _epoch(loader)
    assert len(first) == len(loader) == 23 // 4 and all(len(b) == 4 for b in first)
    assert first != second and len({i for b in first for i in b}) == 20  # no index twice
    again = _loader()
    assert _epoch(again) == first and _epoch(again) == second
    assert _epoch(_loader(seed=1)) != first


def test_a_loader_resumes_mid_epoch_from_its_state():
    whole = _loader()
    expected = _epoch(whole) + _epoch(whole)
    killed = _loader()
    _epoch(killed)
    iterator = iter(killed)
    seen = [next(iterator)[0].tolist() for _ in range(2)]
    state = killed.state_dict()
    assert state == {"epoch": 1, "batches": 2}
    resumed = _loader()
    resumed.load_state_dict(state)
    assert expected[5:7] == seen and _epoch(resumed) == expected[7:]


def test_a_state_saved_at_an_epochs_end_resumes_with_the_next_epoch():
    whole = _loader(epoch_batches=3)  # a trainer that takes three batches an epoch
    _epoch(whole)
    second = _epoch(whole)
    first = _loader(epoch_batches=3)
    iterator = iter(first)
    for _ in range(3):
        next(iterator)
    resumed = _loader(epoch_batches=3)
    resumed.load_state_dict(first.state_dict())  # {"epoch": 0, "batches": 3}: the epoch is over
    assert _epoch(resumed) == second


def test_iterating_never_moves_the_global_generator():
    torch.manual_seed(0)
    before = torch.get_rng_state()
    loader = _loader()
    _epoch(loader)
    loader.load_state_dict({"epoch": 0, "batches": 1})
    _epoch(loader)
    assert torch.equal(torch.get_rng_state(), before)


def test_ranks_take_disjoint_shards_of_the_same_permutation():
    shards = []
    for rank in range(3):
        sampler = EpochBatchSampler(20, 2, drop_last=False, shuffle=True, seed=5)
        sampler.rank, sampler.world_size = rank, 3
        shards.append([i for batch in sampler for i in batch])
    assert [len(s) for s in shards] == [7, 7, 7]  # 20 padded to 21
    assert {i for s in shards for i in s} == set(range(20))
    assert len(set(shards[0]) & set(shards[1])) == 0  # only the one padding index repeats
