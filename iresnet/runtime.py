"""Process settings for training and evaluation runs: applied by commands, never on import.

Each command applies its config's ``runtime`` group in ``main()`` (:func:`apply_runtime`) and
prints what it applied; a script or notebook may call the same function. Nothing here runs when
a module is imported: a library must not change the process it is imported into.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import torch

SETTINGS = ("threads", "quiet_lightning_notes")
# Lightning's notes that do not apply to iresnet's runs: the EMA copy is in eval mode on purpose,
# and its own deprecation notice about torch's pytree API.
LIGHTNING_NOTES = (r".*module\(s\) in eval mode.*", r".*treespec, LeafSpec.*")


def apply_runtime(settings: Mapping[str, Any]) -> list[str]:
    """Applies a ``runtime`` config; returns one line per setting, saying what was done.

    Keys: ``threads`` (torch's intra-op threads, ``torch.set_num_threads``; null keeps torch's
    choice) and ``quiet_lightning_notes`` (filter :data:`LIGHTNING_NOTES`).
    """
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise ValueError(f"unknown runtime setting(s) {unknown}; valid: {', '.join(SETTINGS)}.")
    threads = settings.get("threads")
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"runtime.threads must be a positive integer or null, got {threads!r}.")
        torch.set_num_threads(threads)
    applied = [f"torch threads {torch.get_num_threads()}" + ("" if threads is not None else " (torch's default)")]
    if settings.get("quiet_lightning_notes", False):
        for pattern in LIGHTNING_NOTES:
            warnings.filterwarnings("ignore", message=pattern)
        applied.append("Lightning's eval-mode and pytree notes muted")
    return applied
