"""Datasets as LightningDataModules, dequantization, and checks of user images.

Image datamodules yield ``(x, y)`` with ``x`` float32 ``(B, C, H, W)`` in ``[0, 1)``, uniformly
dequantized at ``n_bits`` per pixel; each exposes ``dims``, ``n_bins`` and ``num_train``.
"""

from .base import InMemoryDataModule, Split
from .checks import check_images, to_unit_interval
from .cifar10 import CIFAR10DataModule
from .collate import DequantizeCollate
from .dequantize import dequantize, to_bins
from .errors import DatasetNotFoundError
from .idx import read_idx
from .images import ImageDataModule, StoredImageDataModule
from .mnist import FashionMNISTDataModule, MNISTDataModule
from .mnist5k import Mnist5kDataModule
from .toy2d import TOY_COMPONENTS, TOY_SAMPLERS, Toy2dDataModule, sample_toy2d, sample_toy2d_components

__all__ = [
    "CIFAR10DataModule",
    "DatasetNotFoundError",
    "DequantizeCollate",
    "FashionMNISTDataModule",
    "ImageDataModule",
    "InMemoryDataModule",
    "MNISTDataModule",
    "Mnist5kDataModule",
    "Split",
    "StoredImageDataModule",
    "TOY_COMPONENTS",
    "TOY_SAMPLERS",
    "Toy2dDataModule",
    "check_images",
    "dequantize",
    "read_idx",
    "sample_toy2d",
    "sample_toy2d_components",
    "to_bins",
    "to_unit_interval",
]
