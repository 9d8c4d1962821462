"""MNIST and Fashion-MNIST from IDX files: torchvision's layout, a plain folder, or Debian's."""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision import datasets

from .base import Split
from .errors import DatasetNotFoundError
from .idx import find_idx_file, read_idx
from .images import StoredImageDataModule

_IDX_NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# Where Debian's `dataset-fashion-mnist` package installs the gzipped IDX files.
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


class IdxDataModule(StoredImageDataModule):
    """28x28 grayscale images read from the four MNIST-style IDX files (each plain or ``.gz``).

    Looks in ``root/<torchvision class name>/raw`` (what ``download=True`` creates), then in
    ``root`` itself, then in ``_extra_dirs()``. Constructor args: see ``StoredImageDataModule``.
    """

    dims = (1, 28, 28)
    _torchvision_dataset: type[datasets.MNIST]
    _extra_fixes: tuple[str, ...] = ()

    def _extra_dirs(self) -> list[Path]:
        return []

    def _search_dirs(self) -> list[Path]:
        raw = self.root / self._torchvision_dataset.__name__ / "raw"
        return [raw, self.root, *self._extra_dirs()]

    def _locate(self) -> Path:
        """The first searched folder holding all four IDX files."""
        names = [name for pair in _IDX_NAMES.values() for name in pair]
        for folder in self._search_dirs():
            if all(find_idx_file(folder, name) for name in names):
                return folder
        name = self._torchvision_dataset.__name__
        raise DatasetNotFoundError(
            name,
            self._search_dirs(),
            f"the IDX files {', '.join(names)} (each plain or .gz)",
            [
                f"set data.root=/path/to/data, the folder holding them or {name}/raw/",
                "or set data.download=true (needs internet)",
                *self._extra_fixes,
            ],
        )

    def _fetch(self) -> None:
        self._torchvision_dataset(str(self.root), train=True, download=True)

    def _load(self) -> tuple[Split, Split]:
        folder = self._locate()
        train, test = (
            Split(
                read_idx(find_idx_file(folder, images)).unsqueeze(1),
                read_idx(find_idx_file(folder, labels)).to(torch.long),
            )
            for images, labels in _IDX_NAMES.values()
        )
        return train, test


class MNISTDataModule(IdxDataModule):
    """MNIST digits: 60,000 training and 10,000 test images, (1, 28, 28)."""

    _torchvision_dataset = datasets.MNIST


class FashionMNISTDataModule(IdxDataModule):
    """Fashion-MNIST clothing images: 60,000 training and 10,000 test, (1, 28, 28).

    Also finds the files of Debian's ``dataset-fashion-mnist`` package.
    """

    _torchvision_dataset = datasets.FashionMNIST
    _extra_fixes = (
        "or install Debian's package: apt-get install dataset-fashion-mnist "
        f"(puts the files in {DEBIAN_FASHION_MNIST_DIR})",
    )

    def _extra_dirs(self) -> list[Path]:
        return [DEBIAN_FASHION_MNIST_DIR]
