"""The random number generators' states as plain tensors and lists, for checkpoints.

Training draws dequantization noise, Hutchinson probes and roulette lengths from the global
generators; restoring them on resume continues the same random streams. The states are kept
as tensors, ints and lists so a checkpoint still loads with ``torch.load(weights_only=True)``
(numpy's state is an ``ndarray``, which that loader refuses).
"""

from __future__ import annotations

import random

import numpy as np
import torch


def rng_states() -> dict:
    """The states of torch's CPU (and CUDA) generators, numpy's and Python's."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    states = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
    }  # fmt: skip
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    """Restores what :func:`rng_states` returned (CUDA states only where CUDA is available)."""
    torch.set_rng_state(states["torch"])
    n = states["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    p = states["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))
    # A run resumed on fewer GPUs restores the devices it has.
    for device, state in enumerate(states.get("cuda", [])[: torch.cuda.device_count()]):
        torch.cuda.set_rng_state(state, device)


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s stream in a run seeded with ``seed`` (rank 0 keeps ``seed``)."""
    return (seed + rank * 0x9E3779B9) % 2**32


def gather_rng_states() -> list[dict]:
    """Every rank's :func:`rng_states`, in rank order (one element outside a process group).

    A collective: every rank must call it (Lightning saves checkpoints on all of them).
    """
    states = rng_states()
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [states]
    gathered: list = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, states)
    return gathered
