"""Peak memory of the current process: resident set size, and the CUDA allocator's peak."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

try:
    import resource  # Unix only
except ImportError:
    resource = None

_STATUS = Path("/proc/self/status")


def _status_kib(field: str) -> float | None:
    """A ``kB`` field of ``/proc/self/status`` (Linux), or None where there is none."""
    if not _STATUS.is_file():
        return None
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return float(line.split()[1])
    return None


def peak_rss_mib() -> float | None:
    """Peak resident set size of this process so far, MiB; None where the platform reports none.

    Linux's ``VmHWM``, the high-water mark of this process's own memory. ``ru_maxrss`` is
    the fallback on other Unix systems: on Linux a child started by ``subprocess`` inherits its
    parent's peak in ``ru_maxrss`` (exec keeps it), so a child of a large process (a test runner)
    would report the parent's peak instead of its own. Windows has neither: reports show "–".
    """
    hwm = _status_kib("VmHWM")
    if hwm is not None:
        return hwm / 1024
    if resource is None:
        return None
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / 2**20 if sys.platform == "darwin" else maxrss / 1024  # bytes on macOS, KiB on Linux


def current_rss_mib() -> float | None:
    """Resident set size now, MiB (Linux only)."""
    rss = _status_kib("VmRSS")
    return None if rss is None else rss / 1024


def peak_cuda_mib(device: torch.device | str) -> float | None:
    """Peak CUDA memory allocated by torch on ``device`` since the last reset, MiB; None on CPU."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20
