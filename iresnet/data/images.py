"""The shared base of the image datamodules: uint8 images in memory, dequantized per batch."""

from __future__ import annotations

from pathlib import Path

import torch

from .base import Collate, InMemoryDataModule, Split, check_count
from .collate import DequantizeCollate


class ImageDataModule(InMemoryDataModule):
    """Serves ``(x, y)``: dequantized ``x`` float32 ``(B, *dims)`` in ``[0, 1)``, int64 ``y``.

    Subclasses set ``dims`` and implement ``_load`` (the official train and test splits as
    uint8 ``(N, C, H, W)`` images with int64 labels). Validation images are a seeded random
    subset of the official training split, or the test split when ``val_size == 0``.

    Training batches get fresh uniform noise (and random horizontal flips if ``hflip``);
    validation and test batches get noise keyed to ``(seed, image index)``, so evaluation is
    reproducible, as in Residual Flows' dequantized test likelihoods.

    Args:
        batch_size, eval_batch_size, num_workers, drop_last: see ``InMemoryDataModule``.
        n_bits: bit depth of the modelled images (8 = full; ``n_bins = 2**n_bits``).
        val_size: training images held out for validation (0: validate on the test split).
        seed: seed of the train/val split and of the evaluation noise.
        hflip: random horizontal flips of training images.
    """

    dims: tuple[int, int, int]

    def __init__(
        self,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        n_bits: int = 8,
        val_size: int = 0,
        drop_last: bool = True,
        seed: int = 0,
        hflip: bool = False,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers, drop_last, seed)
        if isinstance(n_bits, bool) or not isinstance(n_bits, int) or not 1 <= n_bits <= 8:
            raise ValueError(f"data.n_bits must be between 1 and 8, got {n_bits!r}")
        check_count("val_size", val_size, 0)
        self.n_bits = n_bits
        self.n_bins = 2**n_bits
        self.val_size = val_size
        self.hflip = hflip

    def _load(self) -> tuple[Split, Split]:  # pragma: no cover - abstract
        """The official (train, test) splits: uint8 images ``(N, *dims)``, int64 labels ``(N,)``."""
        raise NotImplementedError

    def _build_splits(self) -> dict[str, Split]:
        train, test = self._load()
        for name, split in (("train", train), ("test", test)):
            if split.inputs.dtype != torch.uint8 or tuple(split.inputs.shape[1:]) != self.dims:
                raise ValueError(
                    f"{type(self).__name__}: {name} images must be uint8 (N, *{self.dims}), "
                    f"got {split.inputs.dtype} {tuple(split.inputs.shape)}; the data files "
                    "may be corrupt or belong to another dataset."
                )
        if self.val_size == 0:
            return {"train": train, "val": test, "test": test}
        if self.val_size >= len(train.labels):
            raise ValueError(
                f"{type(self).__name__}: val_size={self.val_size} leaves no training images out "
                f"of {len(train.labels)}; choose data.val_size below {len(train.labels)} "
                "(0 validates on the test split)."
            )
        generator = torch.Generator().manual_seed(self.seed)
        order = torch.randperm(len(train.labels), generator=generator)
        val, rest = order[: self.val_size], order[self.val_size :]
        return {
            "train": Split(train.inputs[rest], train.labels[rest]),
            "val": Split(train.inputs[val], train.labels[val]),
            "test": test,
        }

    def _collate(self, split: str) -> Collate:
        if split == "train":
            return DequantizeCollate(self.n_bits, hflip=self.hflip)
        return DequantizeCollate(self.n_bits, seed=self.seed)


class StoredImageDataModule(ImageDataModule):
    """An ``ImageDataModule`` reading files under ``root``, optionally downloading them first.

    Unless ``download`` is set, missing data raise ``DatasetNotFoundError`` in the constructor,
    before any training is set up. The default ``val_size=5000`` keeps the test split out of
    model selection; ``val_size=0`` trains on the full training split as the papers do.

    Args:
        root: data folder.
        download: fetch the data with torchvision in ``prepare_data`` (needs internet).
        Others: see ``ImageDataModule``.
    """

    def __init__(
        self,
        root: str = "data",
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        n_bits: int = 8,
        val_size: int = 5000,
        drop_last: bool = True,
        seed: int = 0,
        hflip: bool = False,
        download: bool = False,
    ) -> None:
        super().__init__(
            batch_size, eval_batch_size, num_workers, n_bits, val_size, drop_last, seed, hflip
        )
        self.root = Path(root).expanduser().absolute()  # error messages show where we looked
        self.download = download
        if not download:
            self._locate()

    def _locate(self) -> Path:  # pragma: no cover - abstract
        """Where the data are, or raise ``DatasetNotFoundError`` listing where we looked."""
        raise NotImplementedError

    def _fetch(self) -> None:  # pragma: no cover - abstract
        """Download the data into ``root``."""
        raise NotImplementedError

    def prepare_data(self) -> None:
        if self.download:
            self._fetch()
