"""The shared base of the image datamodules: uint8 images in memory, dequantized per batch."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Collate, InMemoryDataModule, Split, check_count
from .collate import DequantizeCollate


class ImageDataModule(InMemoryDataModule):
    """Serves ``(x, y)``: dequantized ``x`` float32 ``(B, *dims)`` in ``[0, 1)``, int64 ``y``.

    Subclasses set ``dims`` and implement ``_load`` (the official train and test splits as
    uint8 ``(N, C, H, W)`` images with int64 labels). Validation images are ``val_size`` of the
    official training split, held out class by class by a seeded draw, so that model selection
    never sees the test split; with ``val_size == 0`` the model trains on all of them and there is
    no validation.

    Training batches get fresh uniform noise (and random horizontal flips if ``hflip``);
    validation and test batches get noise keyed to ``(seed, image index)``, so evaluation is
    reproducible, as in Residual Flows' dequantized test likelihoods.

    Args:
        batch_size, eval_batch_size, num_workers, drop_last: see ``InMemoryDataModule``.
        n_bits: bit depth of the modelled images (8 = full; ``n_bins = 2**n_bits``).
        val_size: training images held out for validation, the same number of each class (0: none).
        seed: seed of the train/val split and of the evaluation noise.
        hflip: random horizontal flips of training images.
        crop_padding: random crops of training images padded by this many pixels (mirrored),
            as i-ResNet trains on CIFAR-10 (0: none).
        pad: zero pixels added around every image (i-ResNet pads MNIST to 32x32).
        channels: repeat one-channel images to this many channels (i-ResNet's MNIST has 3).
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
        crop_padding: int = 0,
        pad: int = 0,
        channels: int | None = None,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers, drop_last, seed)
        check_count("crop_padding", crop_padding, 0)
        check_count("pad", pad, 0)
        if channels is not None:
            check_count("channels", channels, 1)
        c, h, w = type(self).dims  # what the files hold
        if channels is not None and c != 1 and channels != c:
            raise ValueError(f"data.channels={channels} can only repeat one-channel images; these have {c}.")
        self.crop_padding, self.pad, self.channels = crop_padding, pad, channels
        self.dims = (channels or c, h + 2 * pad, w + 2 * pad)
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
            if split.inputs.dtype != torch.uint8 or tuple(split.inputs.shape[1:]) != type(self).dims:
                raise ValueError(
                    f"{type(self).__name__}: {name} images must be uint8 (N, *{type(self).dims}), "
                    f"got {split.inputs.dtype} {tuple(split.inputs.shape)}; the data files "
                    "may be corrupt or belong to another dataset."
                )
        if self.val_size >= len(train.labels):
            raise ValueError(
                f"{type(self).__name__}: val_size={self.val_size} leaves no training images out "
                f"of {len(train.labels)}; choose data.val_size below {len(train.labels)} "
                "(0: train on all of them, without validation)."
            )
        train, test = self._reshaped(train), self._reshaped(test)
        val = held_out(train.labels, self.val_size, self.seed)
        rest = torch.ones(len(train.labels), dtype=torch.bool)
        rest[val] = False
        return {
            "train": Split(train.inputs[rest], train.labels[rest]),
            "val": Split(train.inputs[val], train.labels[val]),
            "test": test,
        }

    def _reshaped(self, split: Split) -> Split:
        """``pad`` zero pixels around the images, and their one channel repeated to ``channels``."""
        x = split.inputs
        if self.pad:
            x = F.pad(x, (self.pad,) * 4)
        if self.channels is not None and x.shape[1] != self.channels:
            x = x.expand(-1, self.channels, -1, -1).contiguous()
        return Split(x, split.labels)

    def dequantized(self, split: str) -> Split:
        """The whole ``split`` as evaluation batches hold it: float32 images in ``[0, 1)`` with noise
        keyed to ``(seed, index)`` (no augmentation), and the labels."""
        raw = self.split(split)
        return Split(*DequantizeCollate(self.n_bits, seed=self.seed)((raw.inputs, raw.labels, torch.arange(len(raw.labels)))))

    def _collate(self, split: str) -> Collate:
        if split == "train":
            return DequantizeCollate(self.n_bits, hflip=self.hflip, crop_padding=self.crop_padding)
        return DequantizeCollate(self.n_bits, seed=self.seed)


def held_out(labels: Tensor, size: int, seed: int) -> Tensor:
    """Indices of ``size`` training images to validate on, drawn by ``seed`` class by class:
    the same number of each class (the first classes one more when ``size`` does not divide)."""
    generator = torch.Generator().manual_seed(seed)
    classes = labels.unique()
    per_class = [size // len(classes) + (i < size % len(classes)) for i in range(len(classes))]
    picks = []
    for label, n in zip(classes.tolist(), per_class):
        members = (labels == label).nonzero().flatten()
        if n > len(members):
            raise ValueError(f"val_size={size} asks for {n} images of class {label}, which has {len(members)}.")
        picks.append(members[torch.randperm(len(members), generator=generator)[:n]])
    return torch.cat(picks).sort().values


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
        crop_padding: int = 0,
        pad: int = 0,
        channels: int | None = None,
    ) -> None:
        super().__init__(
            batch_size, eval_batch_size, num_workers, n_bits, val_size, drop_last, seed, hflip, crop_padding, pad,
            channels,
        )  # fmt: skip
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
