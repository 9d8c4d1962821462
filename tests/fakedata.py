"""Writers of small datasets in the real on-disk formats, for tests that must not download."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import torch

CIFAR_BATCH_SIZES = {"data_batch_1": 4, "data_batch_2": 4, "data_batch_3": 2, "data_batch_4": 2,
                     "data_batch_5": 2, "test_batch": 3}  # fmt: skip
MNIST_SIZES = {"train": 12, "t10k": 5}


def write_cifar10_batches(folder: Path, sizes: dict[str, int] = CIFAR_BATCH_SIZES, seed: int = 0) -> dict:
    """Random uint8 images in CIFAR-10's python layout; returns {file name: (images, labels)}."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    written = {}
    for name, n in sizes.items():
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, n).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"data": data, b"labels": labels}, f)
        written[name] = (torch.from_numpy(data).reshape(n, 3, 32, 32), torch.tensor(labels))
    return written


def write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    """IDX: two zero bytes, type 0x08 (uint8), ndim, big-endian int32 sizes, then the bytes."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        payload = gzip.compress(payload)
    path.write_bytes(payload)


def write_mnist_idx(folder: Path, gz: bool, sizes: dict[str, int] = MNIST_SIZES, seed: int = 0) -> dict:
    """The four IDX files; returns {"train"/"t10k": (images (N, 1, 28, 28), labels (N,))}."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    written = {}
    for split, n in sizes.items():
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        write_idx(folder / f"{split}-images-idx3-ubyte", images, gz)
        write_idx(folder / f"{split}-labels-idx1-ubyte", labels, gz)
        written[split] = (torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels).long())
    return written
