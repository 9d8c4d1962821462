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
    each (lower variance: the diagonal of ``A`` contributes no noise). Each ``probes[i]`` has
    the memory layout of ``like``.
    """
    check_probe_kind(kind)
    if n_probes < 1:
        raise ValueError(f"n_probes must be >= 1, got {n_probes}; pass n_probes=1 or more.")
    # Each probe gets the memory layout of ``like`` (e.g. channels-last feature maps): the VJPs
    # start from the probes, and elementwise ops between mismatched layouts take a slow path.
    channels_last = like.dim() == 4 and not like.is_contiguous() and like.is_contiguous(memory_format=torch.channels_last)
    n, *dims = (n_probes * like.shape[0], *like.shape[1:])
    # The draws fill contiguous memory: normal_ and bernoulli_ on a channels-last tensor take a
    # slow path. A contiguous (N, H, W, C) tensor seen as
    # (N, C, H, W) is a channels-last one.
    shape = (n, *dims[1:], dims[0]) if channels_last else (n, *dims)
    memory = torch.empty(shape, dtype=like.dtype, device=like.device)
    if kind == "gaussian":
        memory.normal_()
    else:
        memory.bernoulli_(0.5).mul_(2).sub_(1)
    probes = memory.permute(0, 3, 1, 2) if channels_last else memory
    return probes.view(n_probes, *like.shape)
