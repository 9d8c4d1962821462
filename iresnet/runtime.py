"""Process settings for long training and evaluation runs: applied by commands, never on import.

Each command applies its config's ``runtime`` group in ``main()`` (:func:`apply_runtime`) and
prints what it applied; a script or notebook may call the same functions. Nothing here runs when
a module is imported: a library must not change the process it is imported into.

The CPU allocator itself is not replaced here. tcmalloc or jemalloc are used the standard way,
by preloading them (``LD_PRELOAD``, as torch's own CPU launcher does), and glibc's malloc is
tuned through its own parameters (``mallopt`` here, or the ``MALLOC_*_`` / ``GLIBC_TUNABLES``
environment variables); docs/benchmarks.md has the measured trade-offs.

glibc reads ``GLIBC_TUNABLES`` only when a process starts, so ``malloc: hugepages`` is the one
setting a running process cannot give itself: the console commands' launcher
(:mod:`iresnet.cli.launch`) starts the command once more with the tunable set, before torch is
imported (:func:`hugepages_environment`). The launcher also imports the command under
:func:`frozen_imports` (``gc: freeze``). This module imports torch only inside
:func:`apply_runtime`, so that the launcher can use it.
"""

from __future__ import annotations

import ctypes
import gc
import os
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Feature maps of a chunk (6.4 MB for 32x64x28x28) sit well below this; larger blocks are
# still mapped and returned to the system when freed.
RETAINED_BLOCK_BYTES = 64 << 20
MALLOC_MODES = ("hugepages", "retain", "default")
GC_MODES = ("freeze", "default")
# glibc >= 2.35: malloc advises the kernel to back its large blocks with transparent huge pages
# (madvise(MADV_HUGEPAGE)), so a fresh 12 MB feature map takes 6 page faults instead of 3,000.
HUGEPAGES_TUNABLE = "glibc.malloc.hugetlb=1"
# Beside it, malloc: hugepages keeps freed blocks up to 32 MiB in the heap (a chunk's feature maps
# are 6.4 MB) instead of unmapping them, and trims the heap's top only past 64 MiB: 60 protocol
# steps ran 7-8% faster for 15 MiB more peak (docs/benchmarks.md, "The garbage collector and the
# exit"). The heap's high-water mark is returned at the end (release_freed_memory).
HUGEPAGES_RETAINED_BLOCK_BYTES = 32 << 20
RETAINED_BLOCKS_TUNABLES = (
    f"glibc.malloc.mmap_threshold={HUGEPAGES_RETAINED_BLOCK_BYTES}"
    f":glibc.malloc.trim_threshold={2 * HUGEPAGES_RETAINED_BLOCK_BYTES}"
)
HUGEPAGES_TUNABLES = f"{HUGEPAGES_TUNABLE}:{RETAINED_BLOCKS_TUNABLES}"
THP_MODE_FILE = Path("/sys/kernel/mm/transparent_hugepage/enabled")
# Lightning's notes that do not apply to iresnet's runs: the EMA copy is in eval mode on purpose,
# and its own deprecation notice about torch's pytree API.
LIGHTNING_NOTES = (r".*module\(s\) in eval mode.*", r".*treespec, LeafSpec.*")
# Allocators recognised in LD_PRELOAD, for the printed summary.
_PRELOADED = {"tcmalloc": "tcmalloc", "jemalloc": "jemalloc", "mimalloc": "mimalloc"}


def retain_freed_memory(block_bytes: int = RETAINED_BLOCK_BYTES) -> bool:
    """Keeps blocks up to ``block_bytes`` in glibc's heap after they are freed (``mallopt``).

    By default glibc serves large blocks with fresh ``mmap``s and unmaps them when freed, and
    trims the heap's free top, so each of a training step's hundreds of feature-map tensors
    comes back as new pages that the kernel faults in and zeroes: 70-220 thousand page faults
    per protocol step (docs/benchmarks.md), 10-20% of its time. Served from the heap, freed
    blocks are reused; the process then holds its high-water mark until it exits.

    Returns whether the setting was applied: not on other C libraries, not under a preloaded
    allocator (which ignores it), nor where the user set glibc's own malloc tunables
    (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_`` or ``GLIBC_TUNABLES``), which win.
    """
    if any(name in os.environ for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")):
        return False
    libc = _glibc_malloc("mallopt")
    if libc is None:
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, block_bytes) and libc.mallopt(_M_TRIM_THRESHOLD, 2 * block_bytes))


def release_freed_memory() -> bool:
    """Returns the free pages of glibc's heap to the system (``malloc_trim(0)``): a command's last
    step, so that its exit does not set its peak memory.

    A training step's feature maps are freed into the heap, which stays resident (with huge pages,
    2 MiB at a time) until the process ends. At exit, the C++ destructors of torch's CUDA
    libraries read about 124 MiB of their files back into memory, even on a machine without a
    GPU (``libcublasLt`` 57 MiB, ``libcusparseLt`` 35 MiB, ``libtorch_cuda`` 14 MiB, ...,
    measured in ``/proc/self/smaps`` before and at ``exit_group``). On top of a full heap that
    spike was the protocol process's peak, 70-95 MiB above its training's (docs/benchmarks.md,
    "The garbage collector and the exit"). Returns whether glibc released anything; False on
    other C libraries and under a preloaded allocator.
    """
    libc = _glibc_malloc("malloc_trim")
    return libc is not None and bool(libc.malloc_trim(0))


def _glibc_malloc(function: str) -> ctypes.CDLL | None:
    """The C library, if it is glibc, has ``function`` and serves malloc (no preloaded allocator,
    which would ignore glibc's malloc settings); else None."""
    if preloaded_allocator() is not None:
        return None
    libc = ctypes.CDLL(None)  # the symbols the interpreter is linked with, its C library's among them
    return libc if hasattr(libc, function) and hasattr(libc, "gnu_get_libc_version") else None


def preloaded_allocator() -> str | None:
    """The allocator preloaded with ``LD_PRELOAD`` (``tcmalloc``, ``jemalloc``, ...), or None."""
    preload = os.environ.get("LD_PRELOAD", "")
    return next((name for key, name in _PRELOADED.items() if key in preload), None)


def hugepages_unavailable(thp_mode_file: Path = THP_MODE_FILE) -> str | None:
    """Why glibc's malloc cannot put large blocks on transparent huge pages here, or None if it can.

    It needs glibc 2.35 or later (the ``glibc.malloc.hugetlb`` tunable), no preloaded allocator,
    and the kernel's transparent huge pages in ``madvise`` mode (in ``always`` mode the kernel
    uses them without being asked and glibc leaves the tunable alone).
    """
    preloaded = preloaded_allocator()
    if preloaded is not None:
        return f"{preloaded} is preloaded"
    try:
        library, version = os.confstr("CS_GNU_LIBC_VERSION").split()
        release = tuple(int(part) for part in version.split(".")[:2])
    except (AttributeError, ValueError, OSError):
        return "the C library is not glibc"
    if library != "glibc" or release < (2, 35):
        return f"{library} {version} has no hugetlb tunable (glibc 2.35 added it)"
    try:
        modes = thp_mode_file.read_text().split()
    except OSError:
        return "the kernel has no transparent huge pages"
    chosen = next((mode.strip("[]") for mode in modes if mode.startswith("[")), "unknown")
    if chosen != "madvise":
        return f"the kernel's transparent huge pages are '{chosen}', not 'madvise'"
    return None


def hugepages_environment(environ: Mapping[str, str]) -> dict[str, str] | None:
    """The environment to start a process in for ``malloc: hugepages`` (``GLIBC_TUNABLES`` set to
    :data:`HUGEPAGES_TUNABLES`), or None if there is nothing to do: the tunable is already set,
    the user set glibc tunables of their own (they win), or :func:`hugepages_unavailable` says
    why not."""
    if "GLIBC_TUNABLES" in environ or hugepages_unavailable() is not None:
        return None
    return {**environ, "GLIBC_TUNABLES": HUGEPAGES_TUNABLES}


def _hugepages_applied() -> str:
    tunables = os.environ.get("GLIBC_TUNABLES")
    if tunables is not None and HUGEPAGES_TUNABLE in tunables.split(":"):
        kept = RETAINED_BLOCKS_TUNABLES in tunables
        retained = f", freed blocks up to {HUGEPAGES_RETAINED_BLOCK_BYTES >> 20} MiB kept" if kept else ""
        return f"glibc malloc on transparent huge pages{retained} (GLIBC_TUNABLES={tunables})"
    reason = hugepages_unavailable()
    if reason is None:
        reason = (
            "GLIBC_TUNABLES is set by the environment" if tunables is not None
            else "glibc reads the tunable only at start: run an iresnet-* command, or set "
            f"GLIBC_TUNABLES={HUGEPAGES_TUNABLES}"
        )  # fmt: skip
    return f"malloc as configured by the environment (no huge pages: {reason})"


@contextmanager
def frozen_imports() -> Iterator[None]:
    """Automatic garbage collection paused for the block, then every object it left frozen.

    A command's imports (torch, Lightning and what they pull in: torchmetrics, torchvision,
    torch._dynamo, sympy, scipy) create about 750,000 objects that the collector tracks and that
    live until the process exits. CPython's full collections walk all of them: 7 ran during the
    imports of ``iresnet-train`` (0.7 s), and the interpreter's exit spent about 1 s more on
    them (docs/benchmarks.md, "The garbage collector and the exit"). ``gc.freeze()`` moves them to the
    permanent generation, which later collections, the exit's among them, skip; the objects stay
    alive as they would anyway. Python documents the same pairing (``gc.disable()`` early,
    ``gc.freeze()`` after) for servers that fork workers, which then share these pages.

    Meant for a process's entry point (the console commands' launcher uses it), not for a
    library or a notebook: frozen objects that later become cyclic garbage are never collected.
    Collection is enabled after the block only if it was enabled before it.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def _gc_applied() -> str:
    frozen = gc.get_freeze_count()
    if frozen:
        return f"garbage collector skips the {frozen:,} objects of the imports (gc.freeze)"
    return "garbage collector as usual (gc: freeze applies when an iresnet-* command imports its modules)"


def apply_runtime(settings: Mapping[str, Any]) -> list[str]:
    """Applies a ``runtime`` config; returns one line per setting, saying what was done.

    Keys: ``threads`` (torch's intra-op threads; null keeps torch's choice), ``malloc``
    (``hugepages``: reports whether the process started with :data:`HUGEPAGES_TUNABLE`, and with
    :data:`RETAINED_BLOCKS_TUNABLES`; ``retain``: :func:`retain_freed_memory`; ``default``:
    glibc as it is), ``gc`` (``freeze``: reports whether the command's launcher imported it
    under :func:`frozen_imports`; ``default``: nothing to do) and ``quiet_lightning_notes``
    (filter :data:`LIGHTNING_NOTES`).
    """
    import torch  # here, not at the top: the launcher reads this module before torch is imported

    unknown = sorted(set(settings) - {"threads", "malloc", "gc", "quiet_lightning_notes"})
    if unknown:
        raise ValueError(f"unknown runtime setting(s) {unknown}; valid: threads, malloc, gc, quiet_lightning_notes.")
    applied = []
    threads = settings.get("threads")
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"runtime.threads must be a positive integer or null, got {threads!r}.")
        torch.set_num_threads(threads)
    applied.append(f"torch threads {torch.get_num_threads()}" + ("" if threads is not None else " (torch's default)"))
    malloc = settings.get("malloc", "default")
    if malloc not in MALLOC_MODES:
        raise ValueError(f"runtime.malloc must be one of {MALLOC_MODES}, got {malloc!r}.")
    preloaded = preloaded_allocator()
    if preloaded is not None:
        applied.append(f"allocator {preloaded} (LD_PRELOAD)")
    elif malloc == "hugepages":
        applied.append(_hugepages_applied())
    elif malloc == "retain" and retain_freed_memory():
        applied.append(f"glibc malloc keeps freed blocks up to {RETAINED_BLOCK_BYTES >> 20} MiB (mallopt)")
    else:
        applied.append("malloc as configured by the environment")
    collector = settings.get("gc", "default")
    if collector not in GC_MODES:
        raise ValueError(f"runtime.gc must be one of {GC_MODES}, got {collector!r}.")
    if collector == "freeze":
        applied.append(_gc_applied())
    if settings.get("quiet_lightning_notes", False):
        for pattern in LIGHTNING_NOTES:
            warnings.filterwarnings("ignore", message=pattern)
        applied.append("Lightning's eval-mode and pytree notes muted")
    return applied
