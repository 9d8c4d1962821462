"""A cache of large CPU blocks in torch's allocator: freed feature maps are reused, not faulted in.

A training step frees and re-allocates the same few hundred feature maps (6.4 MB for
32x64x28x28) every step. glibc serves such blocks either with fresh ``mmap``s, whose pages the
kernel faults in and zeroes on every use (70-220 thousand page faults per protocol step), or,
with :func:`iresnet.runtime.retain_freed_memory`, from its heap, where maps of different sizes
leave gaps that stay resident (a 420 MiB heap for 265 MiB in use at the peak).
:mod:`large_block_cache.cpp <iresnet.native>` keeps freed blocks of at least ``min_bytes`` by
size class and hands them out again, unmapping idle ones only when a new size needs pages
beyond 1.25 times the peak in use: no page faults in a steady state, and 80-125 MiB less peak
resident memory on the benchmark protocol (docs/benchmarks.md).
"""

from __future__ import annotations

import ctypes

from iresnet.native.build import load_library

MIN_BLOCK_BYTES = 256 << 10
_STATS = ("mapped", "peak_mapped", "in_use", "peak_in_use", "hits", "misses", "unmapped")


def install_large_block_cache(min_bytes: int = MIN_BLOCK_BYTES) -> bool:
    """Serves torch's CPU allocations of at least ``min_bytes`` from the large-block cache.

    For the rest of the process: tensors allocated before keep their own allocator, and the
    cache stays in place (later calls change nothing, ``min_bytes`` included). Returns whether
    the cache is in use: False where native code cannot be built or ``IRESNET_NATIVE=0``.
    """
    if min_bytes < 1:
        raise ValueError(f"min_bytes must be a positive number of bytes, got {min_bytes}.")
    library = load_library("large_block_cache")
    if library is None:
        return False
    library.iresnet_install_large_block_cache(ctypes.c_size_t(min_bytes))
    return True


def large_block_cache_stats() -> dict[str, int] | None:
    """The cache's counters, or None where it is not installed: bytes ``mapped``, ``in_use``
    and their peaks, and numbers of blocks: ``hits`` (reused), ``misses`` (mapped anew),
    ``unmapped``."""
    library = load_library("large_block_cache")
    if library is None:
        return None
    values = (ctypes.c_size_t * len(_STATS))()
    if not library.iresnet_large_block_cache_stats(values):
        return None
    return dict(zip(_STATS, values))
