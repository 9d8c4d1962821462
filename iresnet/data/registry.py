"""Datamodules by name, for configs and the command line."""

from __future__ import annotations

from typing import Any

from .base import InMemoryDataModule
from .cifar10 import CIFAR10DataModule
from .mnist import FashionMNISTDataModule, MNISTDataModule
from .mnist5k import Mnist5kDataModule
from .toy2d import Toy2dDataModule

DATAMODULES: dict[str, type[InMemoryDataModule]] = {
    "mnist5k": Mnist5kDataModule,
    "mnist": MNISTDataModule,
    "fashion_mnist": FashionMNISTDataModule,
    "cifar10": CIFAR10DataModule,
    "toy2d": Toy2dDataModule,
}


def get_datamodule(name: str, /, **kwargs: Any) -> InMemoryDataModule:
    """The datamodule registered as ``name``, built with ``kwargs`` (its constructor args).

    ``name`` is positional-only so ``kwargs`` may hold the toy datamodule's own ``name``.
    """
    if name not in DATAMODULES:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATAMODULES)}")
    return DATAMODULES[name](**kwargs)
