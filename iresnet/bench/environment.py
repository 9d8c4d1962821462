"""What a result was measured on: device, CPU, torch, threads, load, code version."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path

import torch

import iresnet

# Allocators recognised in LD_PRELOAD (the user's choice of environment), for the record.
_PRELOADED = ("tcmalloc", "jemalloc", "mimalloc")


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else ``platform.processor()``)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def preloaded_allocator() -> str | None:
    """The allocator preloaded with ``LD_PRELOAD`` (``tcmalloc``, ``jemalloc``, ...), or None."""
    preload = os.environ.get("LD_PRELOAD", "")
    return next((name for name in _PRELOADED if name in preload), None)


def git_commit() -> str | None:
    """``git describe --always --dirty`` of the source tree, or None outside a checkout."""
    try:
        result = subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=Path(iresnet.__file__).parent,
            capture_output=True, text=True, timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


def environment(device: torch.device) -> dict[str, object]:
    """The machine and software a benchmark runs on, for the JSON report."""
    return {
        "time": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "iresnet": iresnet.__version__,
        "git": git_commit(),
        "preloaded_allocator": preloaded_allocator(),
    }
