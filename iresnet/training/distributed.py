"""Keeping state that each process updates on its own identical across data-parallel ranks."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from iresnet.lipschitz import spectral_norm_modules


def broadcast_spectral_norms(module: nn.Module, src: int = 0) -> None:
    """Copies rank ``src``'s power-iteration buffers (``u``, ``v``, ``sigma``) to every rank.

    DDP broadcasts buffers from rank 0 before each forward, but the power iteration inside the
    forward then updates them on each rank, so after the last step (or after evaluation-time
    power iterations) ranks may hold different vectors and bounds. One flat broadcast makes them
    identical again. A no-op outside a process group.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    buffers = [b for _, _, sn in spectral_norm_modules(module) for b in sn.buffers()]
    if not buffers:
        return
    flat = torch.cat([b.detach().reshape(-1).to(torch.float64) for b in buffers])
    dist.broadcast(flat, src)
    offset = 0
    for b in buffers:
        b.copy_(flat[offset : offset + b.numel()].view_as(b))
        offset += b.numel()
