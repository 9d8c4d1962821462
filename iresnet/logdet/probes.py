"""Hutchinson probe vectors: ``E[v v^T] = I`` so that ``E[v^T A v] = tr(A)``."""

from __future__ import annotations

import torch
from torch import Tensor

PROBE_KINDS = ("gaussian", "rademacher")


def check_probe_kind(kind: str) -> None:
    """Raise a ``ValueError`` unless ``kind`` is one of :data:`PROBE_KINDS`."""
    if kind not in PROBE_KINDS:
        raise ValueError(f"unknown probe {kind!r}; use one of {PROBE_KINDS}.")


def sample_probe(like: Tensor, kind: str = "gaussian", n_probes: int = 1) -> Tensor:
    """Draw ``n_probes`` independent probes shaped like ``like``: returns ``(n_probes, *like.shape)``.

    ``gaussian``: entries ``N(0, 1)``. ``rademacher``: entries ``+-1`` with probability 1/2
    each (lower variance: the diagonal of ``A`` contributes no noise).
    """
    check_probe_kind(kind)
    if n_probes < 1:
        raise ValueError(f"n_probes must be >= 1, got {n_probes}; pass n_probes=1 or more.")
    shape = (n_probes, *like.shape)
    if kind == "gaussian":
        return torch.randn(shape, dtype=like.dtype, device=like.device)
    return torch.randint(0, 2, shape, dtype=like.dtype, device=like.device) * 2 - 1
