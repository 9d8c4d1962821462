"""What a benchmark run measures and how much: the sections of the ``bench`` config, checked.

The sizes live in ``configs/bench.yaml`` (one key per section) and its ``profile`` group
(``full``, ``quick``, ``smoke``); this module names the sections and refuses settings that name
nothing, before any section starts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

SECTIONS = ("train", "memory", "eval", "inversion", "logdet", "spectral", "samples", "ddp", "full")
# Gradient modes of the memory curve (as in PowerSeriesLogDet): (grad, memory_efficient).
MEMORY_MODES = {
    "backprop": ("backprop", False),
    "neumann": ("neumann", False),
    "backprop_memory_efficient": ("backprop", True),
    "neumann_memory_efficient": ("neumann", True),
}
_VARIANT = re.compile(r"roulette|series-[1-9][0-9]*")


def _unknown(kind: str, names: Any, valid: str) -> None:
    raise ValueError(f"unknown {kind} {list(names)}; choose from {valid}.")


def check_settings(cfg: Mapping[str, Any]) -> None:
    """``ValueError`` naming the setting, for sections, variants or memory modes that do not exist."""
    sections = list(cfg["sections"])
    if unknown := [s for s in sections if s not in SECTIONS]:
        _unknown("section(s)", unknown, ", ".join(SECTIONS))
    if "train" in sections and (unknown := [v for v in cfg["train"]["variants"] if not _VARIANT.fullmatch(str(v))]):
        _unknown("train.variants", unknown, "roulette, series-N")
    if "memory" in sections and (unknown := [m for m in cfg["memory"]["modes"] if m not in MEMORY_MODES]):
        _unknown("memory.modes", unknown, ", ".join(MEMORY_MODES))
