"""Process settings for long training and evaluation runs, applied by the command-line tools."""

from __future__ import annotations

import ctypes
import os

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Feature maps of a chunk (6.4 MB for 32x64x28x28) sit well below this; larger blocks are
# still mapped and returned to the system when freed.
RETAINED_BLOCK_BYTES = 64 << 20


def retain_freed_memory(block_bytes: int = RETAINED_BLOCK_BYTES) -> bool:
    """Keeps blocks up to ``block_bytes`` in the heap after they are freed (glibc only).

    By default glibc serves large blocks with fresh ``mmap``s and unmaps them when freed, and
    trims the heap's free top, so each of a training step's hundreds of feature-map tensors
    comes back as new pages that the kernel faults in and zeroes: 70-220 thousand page faults
    per protocol step (docs/benchmarks.md), 10-20% of its time. Served from the heap, freed
    blocks are reused; the peak resident memory is unchanged (the peak needs those pages
    anyway), but the process holds its high-water mark until it exits.

    Returns whether the setting was applied: not on other C libraries, nor where the user set
    glibc's own malloc tunables (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_`` or
    ``GLIBC_TUNABLES``), which win.
    """
    if any(name in os.environ for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")):
        return False
    libc = ctypes.CDLL(None)  # the symbols the interpreter is linked with, its C library's among them
    if not hasattr(libc, "mallopt") or not hasattr(libc, "gnu_get_libc_version"):
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, block_bytes) and libc.mallopt(_M_TRIM_THRESHOLD, 2 * block_bytes))
