"""A reader for the IDX files of MNIST-style datasets, plain or gzip-compressed.

IDX layout (big-endian): two zero bytes, a type code, the number of dimensions ``n``,
``n`` int32 sizes, then the values in C order.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | Path) -> Tensor:
    """The array stored in an IDX file (``.gz`` is decompressed), e.g. uint8 ``(N, 28, 28)``."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad header {data[:4]!r})")
    dtype, ndim = _IDX_DTYPES[data[2]], data[3]
    shape = tuple(int(s) for s in np.frombuffer(data, ">i4", count=ndim, offset=4))
    offset = 4 + 4 * ndim
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - offset != expected:
        raise ValueError(
            f"{path}: header promises shape {shape} ({expected} bytes) but holds "
            f"{len(data) - offset} bytes; the file is truncated or corrupt, download it again."
        )
    values = np.frombuffer(data, dtype, offset=offset).reshape(shape)
    return torch.from_numpy(values.astype(dtype.newbyteorder("=")))


def find_idx_file(folder: Path, name: str) -> Path | None:
    """``folder/name`` or ``folder/name.gz``, whichever exists first (None if neither)."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None
