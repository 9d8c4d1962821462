"""In-memory datasets served in vectorised batches; the base of every datamodule here.

Each split is a pair of tensors (inputs ``(N, ...)``, labels ``(N,)``). The dataset hands the
DataLoader whole batches through ``__getitems__`` (one fancy-indexing call instead of one per
sample), and a per-datamodule collate turns ``(x, y, index)`` into the ``(x, y)`` batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import pytorch_lightning as pl
import torch
from torch import Tensor
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from .loader import ResumableDataLoader, next_training_epoch

RawBatch = tuple[Tensor, Tensor, Tensor]
Collate = Callable[[RawBatch], tuple[Tensor, Tensor]]


class Split(NamedTuple):
    """One split in memory: ``inputs`` of shape ``(N, ...)``, ``labels`` of shape ``(N,)``."""

    inputs: Tensor
    labels: Tensor


def check_count(name: str, value: object, minimum: int) -> None:
    """``ValueError`` naming ``data.<name>`` unless ``value`` is an integer ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"data.{name} must be {what}, got {value!r}")


class TensorBatches(Dataset):
    """A ``Split`` as a map-style dataset whose batched fetch returns ``(x, y, index)``.

    ``index`` (int64, shape ``(B,)``) is each sample's position in the split, so a collate can
    key per-sample randomness to it (reproducible evaluation noise).
    """

    def __init__(self, split: Split) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split.labels)

    def __getitem__(self, i: int) -> RawBatch:
        return self.split.inputs[i], self.split.labels[i], torch.tensor(i)

    def __getitems__(self, indices: list[int]) -> RawBatch:
        index = torch.as_tensor(indices, dtype=torch.long)
        return self.split.inputs[index], self.split.labels[index], index


class InMemoryDataModule(pl.LightningDataModule):
    """Builds train/val/test ``Split`` s once and serves them with a subclass's collate.

    Subclasses implement ``_build_splits`` and ``_collate``. Data are loaded on the first call
    to ``setup`` (or to ``num_train`` or a dataloader), so a datamodule works with or without a
    Trainer.

    Args:
        batch_size: training batch size.
        eval_batch_size: validation/test batch size (``batch_size`` if None).
        num_workers: DataLoader worker processes (batches are cheap, 0 is usually fastest).
        drop_last: drop the last incomplete training batch (keeps batch statistics stable).
        seed: seed of the training order (a permutation per epoch, resumable mid-epoch:
            :class:`~iresnet.data.loader.ResumableDataLoader`).
    """

    def __init__(
        self,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        drop_last: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        eval_batch_size = batch_size if eval_batch_size is None else eval_batch_size
        for name, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            check_count(name, value, 1)
        check_count("num_workers", num_workers, 0)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.drop_last = drop_last
        self.seed = seed
        self._splits: dict[str, Split] | None = None

    def _build_splits(self) -> dict[str, Split]:  # pragma: no cover - abstract
        """Load or generate the data as ``{"train": ..., "val": ..., "test": ...}``."""
        raise NotImplementedError

    def _collate(self, split: str) -> Collate:  # pragma: no cover - abstract
        """The function turning a raw ``(x, y, index)`` batch of ``split`` into ``(x, y)``."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        """Load every split once (later calls are no-ops) and check they can be batched."""
        if self._splits is not None:
            return
        splits = self._build_splits()
        for name, split in splits.items():
            if len(split.labels) == 0 and name != "val":  # an empty val split: no validation
                raise ValueError(
                    f"{type(self).__name__}: the {name} split is empty; check the data files "
                    "under data.root, or the split sizes (data.val_size, data.num_*)."
                )
        n_train = len(splits["train"].labels)
        if self.drop_last and self.batch_size > n_train:
            raise ValueError(
                f"{type(self).__name__}: batch_size={self.batch_size} exceeds the {n_train} "
                "training examples, so drop_last=True would leave no training batch. Lower "
                f"data.batch_size to at most {n_train} or set data.drop_last=false."
            )
        self._splits = splits

    def split(self, name: str) -> Split:
        """The ``"train"``, ``"val"`` or ``"test"`` split, loading the data if needed."""
        self.setup()
        return self._splits[name]

    @property
    def num_train(self) -> int:
        """Number of training examples (loads the data on first use)."""
        return len(self.split("train").labels)

    def _loader(self, split: str, batch_size: int) -> DataLoader:
        """Batches of ``split`` in order; under data parallelism this rank's shard (the trainer's
        ``use_distributed_sampler`` is off: the training loader shards itself)."""
        dataset = TensorBatches(self.split(split))
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=DistributedSampler(dataset, shuffle=False) if distributed else None,
            drop_last=False,
            num_workers=self.num_workers,
            collate_fn=self._collate(split),
            # Respawning workers every epoch costs more than the batches themselves.
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> ResumableDataLoader:
        """Shuffled batches in an order set by ``(seed, epoch)``, resumable mid-epoch, this rank's shard."""
        return ResumableDataLoader(
            TensorBatches(self.split("train")),
            self.batch_size,
            shuffle=True,
            drop_last=self.drop_last,
            seed=self.seed,
            epoch_batches=self._trainer_epoch_batches(),
            first_epoch=next_training_epoch(getattr(self, "trainer", None)),
            num_workers=self.num_workers,
            collate_fn=self._collate("train"),
            persistent_workers=self.num_workers > 0,
        )

    def _trainer_epoch_batches(self) -> int | None:
        """The batches a trainer's epoch takes (``limit_train_batches`` as an int), if attached to one."""
        limit = getattr(getattr(self, "trainer", None), "limit_train_batches", None)
        return limit if isinstance(limit, int) and not isinstance(limit, bool) else None

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size)
