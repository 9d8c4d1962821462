"""CIFAR-10 read from its own python format (our reader: torchvision's insists on md5 sums)."""

from __future__ import annotations

import pickle
import tarfile
from pathlib import Path

import numpy as np
import torch
from torchvision import datasets

from .base import Split
from .errors import DatasetNotFoundError
from .images import StoredImageDataModule

FOLDER = "cifar-10-batches-py"
ARCHIVE = "cifar-10-python.tar.gz"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCHES = ("test_batch",)


def read_cifar_batches(folder: Path, names: tuple[str, ...]) -> Split:
    """Concatenated batch files: uint8 images ``(N, 3, 32, 32)`` and int64 labels ``(N,)``.

    Each file is a pickled dict with ``b"data"`` (uint8 ``(n, 3072)``, channel-major rows)
    and ``b"labels"`` (n ints).
    """
    images, labels = [], []
    for name in names:
        with open(folder / name, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        images.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch[b"labels"], dtype=np.int64))
    return Split(torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels)))


class CIFAR10DataModule(StoredImageDataModule):
    """CIFAR-10: 50,000 training and 10,000 test RGB images, (3, 32, 32).

    Reads ``root/cifar-10-batches-py/`` (or ``root`` itself if it holds the batch files); if
    only ``root/cifar-10-python.tar.gz`` is there, it is extracted into ``root`` once. Training
    images are flipped horizontally at random by default (``hflip=True``), as in Residual Flows.
    Constructor args: see ``StoredImageDataModule``.
    """

    dims = (3, 32, 32)

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
        hflip: bool = True,
        download: bool = False,
        crop_padding: int = 0,
        pad: int = 0,
        channels: int | None = None,
    ) -> None:
        super().__init__(
            root, batch_size, eval_batch_size, num_workers, n_bits, val_size, drop_last, seed,
            hflip, download, crop_padding, pad, channels,
        )

    def _locate(self) -> Path:
        """The folder of batch files, else the archive to extract."""
        for folder in (self.root / FOLDER, self.root):
            if all((folder / name).is_file() for name in TRAIN_BATCHES + TEST_BATCHES):
                return folder
        if (self.root / ARCHIVE).is_file():
            return self.root / ARCHIVE
        raise DatasetNotFoundError(
            "CIFAR-10",
            [self.root / FOLDER, self.root, self.root / ARCHIVE],
            f"the batch files {', '.join(TRAIN_BATCHES + TEST_BATCHES)} or the archive {ARCHIVE}",
            [
                f"set data.root=/path/to/data, the folder holding {FOLDER}/ or {ARCHIVE}",
                "or set data.download=true (needs internet)",
            ],
        )

    def _extracted(self) -> Path:
        """The batch folder, extracting the archive first if that is all there is."""
        location = self._locate()
        if location.is_dir():
            return location
        # The "data" filter (Python >= 3.10.12 / 3.11.4) refuses members escaping root.
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        with tarfile.open(location, "r:gz") as archive:
            archive.extractall(self.root, **safe)
        return self.root / FOLDER

    def _fetch(self) -> None:
        datasets.CIFAR10(str(self.root), train=True, download=True)

    def prepare_data(self) -> None:
        # Extract here too: prepare_data runs on one process, before setup on every process.
        super().prepare_data()
        self._extracted()

    def _load(self) -> tuple[Split, Split]:
        folder = self._extracted()
        return read_cifar_batches(folder, TRAIN_BATCHES), read_cifar_batches(folder, TEST_BATCHES)
