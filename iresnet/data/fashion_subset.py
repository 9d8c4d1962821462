"""The Fashion-MNIST subset that ships with iresnet: 1,000 training and 1,000 test images.

The first 1,000 images of each official split (MIT license, Zalando SE: see
``fashion_mnist_1k/LICENSE``), so that Fashion-MNIST models can be evaluated and compared on a
machine without the full dataset (``scripts/fashion_mnist_subset.py`` writes them).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from .base import Split
from .errors import DatasetNotFoundError
from .idx import read_idx
from .images import ImageDataModule
from .mnist import FashionMNISTDataModule

SUBSET_DIR = Path(__file__).resolve().parent / "fashion_mnist_1k"


class FashionMNISTSubsetDataModule(ImageDataModule):
    """The shipped Fashion-MNIST subset: 1,000 training and 1,000 test images, (1, 28, 28).

    ``val_size`` of the 1,000 training images are held out for validation (default 500).
    Constructor args: see ``ImageDataModule``.
    """

    dims = (1, 28, 28)

    def __init__(self, *args, val_size: int = 500, **kwargs) -> None:
        super().__init__(*args, val_size=val_size, **kwargs)

    def _load(self) -> tuple[Split, Split]:
        def split(prefix: str) -> Split:
            images = read_idx(SUBSET_DIR / f"{prefix}-images-idx3-ubyte.gz").unsqueeze(1)
            return Split(images, read_idx(SUBSET_DIR / f"{prefix}-labels-idx1-ubyte.gz").to(torch.long))

        return split("train"), split("t10k")


def fashion_mnist_or_subset(**kwargs) -> ImageDataModule:
    """Full Fashion-MNIST (``FashionMNISTDataModule(**kwargs)``) where its files are found, else
    the shipped subset with the same batch sizes, bit depth and seed (logged as a warning).

    The data config of the shipped ``fashion_mnist`` model, so that it evaluates on any machine.
    """
    try:
        return FashionMNISTDataModule(**kwargs)
    except DatasetNotFoundError:
        keep = {k: v for k, v in kwargs.items() if k in ("batch_size", "eval_batch_size", "n_bits", "seed")}
        logging.getLogger(__name__).warning(
            "Fashion-MNIST not found; using the 1,000 test images shipped with iresnet "
            "(apt-get install dataset-fashion-mnist for all 10,000)."
        )
        return FashionMNISTSubsetDataModule(**keep)
