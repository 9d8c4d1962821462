"""A training DataLoader that resumes mid-epoch: its order is a function of (seed, epoch), its
position is its state.

Lightning saves a loader's ``state_dict()`` in every checkpoint and hands it back through
``load_state_dict`` when a run resumes; with it, a run killed at step ``k`` of an epoch continues
with batch ``k + 1`` of the same permutation, as if it had never stopped. The order never reads
the global random generator (nor does creating the iterator), so the training noise drawn from
it (dequantization, probes) is the same in a resumed run as in an uninterrupted one.

Under data parallelism each rank takes every ``world_size``-th index of the epoch's permutation
(padded by wrapping around, as ``DistributedSampler`` does), so the ranks see disjoint shards.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler

# Mixes the seed and the epoch into one generator seed (a large odd multiplier, as for keyed noise).
_EPOCH_STRIDE = 0x9E3779B97F4A7C15


def _world() -> tuple[int, int]:
    """``(rank, world_size)`` of the running process group, or ``(0, 1)``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class EpochBatchSampler(Sampler[list[int]]):
    """Batches of a permutation of ``range(n)`` drawn from ``(seed, epoch)``, from batch ``start`` on.

    ``len()`` is the whole epoch's number of batches (of this rank's shard); ``set_epoch`` chooses
    the epoch and where in it to start.
    """

    def __init__(self, n: int, batch_size: int, drop_last: bool, shuffle: bool, seed: int) -> None:
        self.n, self.batch_size, self.drop_last, self.shuffle, self.seed = n, batch_size, drop_last, shuffle, seed
        self.rank, self.world_size = _world()
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def _shard(self) -> list[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed((self.seed * _EPOCH_STRIDE + self.epoch) % 2**63)
            order = torch.randperm(self.n, generator=generator).tolist()
        else:
            order = list(range(self.n))
        per_rank = -(-self.n // self.world_size)
        order += order[: per_rank * self.world_size - self.n]  # equal shards
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[list[int]]:
        shard = self._shard()
        for b in range(self.start, len(self)):
            yield shard[b * self.batch_size : (b + 1) * self.batch_size]

    def __len__(self) -> int:
        per_rank = -(-self.n // self.world_size)
        return per_rank // self.batch_size if self.drop_last else -(-per_rank // self.batch_size)


class ResumableDataLoader(DataLoader):
    """A ``DataLoader`` with an :class:`EpochBatchSampler` whose place in its epochs is its state.

    Each ``iter()`` starts the next epoch, or, after ``load_state_dict``, continues the saved one
    at the saved batch. ``state_dict() -> {"epoch", "batches"}`` counts the batches handed out
    (not those prefetched by workers). ``epoch_batches`` is how many batches make an epoch for
    the trainer (``limit_train_batches``), so a state saved at an epoch's end resumes with the
    next epoch. ``first_epoch`` is the epoch the first ``iter()`` starts: Lightning hands a loader
    its saved state only when it resumes mid-epoch, so a loader made for a run resumed at an
    epoch's end is told its epoch here (:func:`next_training_epoch`).
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        shuffle: bool,
        drop_last: bool,
        seed: int,
        epoch_batches: int | None = None,
        first_epoch: int = 0,
        **kwargs: Any,
    ) -> None:
        sampler = EpochBatchSampler(len(dataset), batch_size, drop_last, shuffle, seed)
        # Its own generator: making the iterator draws a base seed, which must not move the global stream.
        super().__init__(dataset, batch_sampler=sampler, generator=torch.Generator().manual_seed(seed), **kwargs)
        self.epoch_sampler = sampler
        self.epoch_batches = len(sampler) if epoch_batches is None else min(epoch_batches, len(sampler))
        self._epoch, self._batches = first_epoch - 1, 0
        self._resume: tuple[int, int] | None = None

    def __iter__(self) -> Iterator[Any]:
        epoch, start = self._resume if self._resume is not None else (self._epoch + 1, 0)
        self._resume = None
        self._epoch, self._batches = epoch, start
        self.epoch_sampler.set_epoch(epoch, start)
        for batch in super().__iter__():
            self._batches += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self._epoch, "batches": self._batches}

    def load_state_dict(self, state: dict[str, int]) -> None:
        epoch, batches = int(state["epoch"]), int(state["batches"])
        self._resume = (epoch + 1, 0) if batches >= self.epoch_batches or epoch < 0 else (epoch, batches)


def next_training_epoch(trainer: Any) -> int:
    """The epoch a Lightning trainer trains next: the number of epochs whose batches it has all
    processed (restored from the checkpoint when a run resumes); 0 without a trainer."""
    fit_loop = getattr(trainer, "fit_loop", None)
    return 0 if fit_loop is None else int(fit_loop.epoch_progress.current.processed)
