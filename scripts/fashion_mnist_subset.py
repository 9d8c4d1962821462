"""Writes the Fashion-MNIST subset shipped in iresnet/data/fashion_mnist_1k/: the first 1,000
training and the first 1,000 test images of the full dataset, as gzipped IDX files.

    python scripts/fashion_mnist_subset.py [--source /usr/share/datasets/fashion-mnist] [--n 1000]
"""

from __future__ import annotations

import argparse
import gzip
from pathlib import Path

from iresnet.data.fashion_subset import SUBSET_DIR
from iresnet.data.idx import find_idx_file

NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def truncated_idx(data: bytes, n: int) -> bytes:
    """The IDX file ``data`` cut to its first ``n`` items: the header's first size becomes ``n``."""
    ndim = data[3]
    item = 1
    for d in range(1, ndim):
        item *= int.from_bytes(data[4 + 4 * d : 8 + 4 * d], "big")
    header = data[:4] + n.to_bytes(4, "big") + data[8 : 4 + 4 * ndim]
    return header + data[4 + 4 * ndim : 4 + 4 * ndim + n * item]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    parser.add_argument("--n", type=int, default=1000)
    args = parser.parse_args()
    SUBSET_DIR.mkdir(parents=True, exist_ok=True)
    for name in NAMES:
        path = find_idx_file(args.source, name)
        if path is None:
            raise SystemExit(f"error: {name}(.gz) not found in {args.source}; pass --source.")
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            data = truncated_idx(f.read(), args.n)
        # mtime=0: the same bytes on every run.
        with gzip.GzipFile(SUBSET_DIR / f"{name}.gz", "wb", compresslevel=9, mtime=0) as f:
            f.write(data)
        print(f"wrote {SUBSET_DIR / f'{name}.gz'}")


if __name__ == "__main__":
    main()
