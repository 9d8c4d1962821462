"""Inversion cost: seconds and network evaluations to reconstruct images to a max-abs error."""

from __future__ import annotations

import time
import warnings

import torch
from torch import Tensor

from iresnet.bench.evaluation import swapped, synchronize
from iresnet.inverse import AndersonInverse, FixedPointInverse, InverseConvergenceWarning, full_float32_precision
from iresnet.logdet import PowerSeriesLogDet
from iresnet.models import FlowModel

SOLVERS = {"fixed_point": FixedPointInverse, "anderson": AndersonInverse}


@torch.no_grad()
def encode(model: FlowModel, x: Tensor) -> Tensor:
    """``z = f(x)`` without TF32, as the inverse runs; the log-determinant, which inversion does
    not need, with a 1-term series."""
    with swapped(model, "logdet", PowerSeriesLogDet(n_terms=1)), full_float32_precision():
        return model(x)[0]


@torch.no_grad()
def invert_once(model: FlowModel, x: Tensor, z: Tensor, solver) -> dict[str, object]:
    """Inverts ``z`` with ``solver`` in every block; seconds, net evaluations, image-space error."""
    with swapped(model, "solver", solver), warnings.catch_warnings():
        warnings.simplefilter("ignore", InverseConvergenceWarning)
        synchronize(z.device)
        start = time.perf_counter()
        reconstruction = model.inverse(z)
        synchronize(z.device)
        seconds = time.perf_counter() - start
    stats = [block.last_inverse_stats for block in model.residual_blocks()]
    return {
        "seconds": seconds,
        "net_evals": sum(s.net_evals for s in stats),
        "max_block_iterations": max(s.iterations for s in stats),
        "converged": all(s.converged for s in stats),
        "max_abs_error": float((reconstruction - x).abs().max()),
    }


def invert_to_tolerance(
    model: FlowModel, x: Tensor, solver: str, target: float, max_iter: int = 2000, attempts: int = 4
) -> dict[str, object]:
    """Encodes ``x``, then inverts with ``solver`` until the max-abs error in image space is <= ``target``.

    Every block's solver stops at ``atol`` (``rtol = 0``), starting at ``atol = target`` and
    dividing it by 10 while the image-space error is above ``target`` (errors of the blocks add
    up), at most ``attempts`` times. Reports the last attempt.
    """
    z = encode(model, x)
    atol = target
    for attempt in range(1, attempts + 1):
        result = invert_once(model, x, z, SOLVERS[solver](atol=atol, rtol=0.0, max_iter=max_iter, on_failure="warn"))
        if result["max_abs_error"] <= target or attempt == attempts:
            break
        atol /= 10
    return {"solver": solver, "target": target, "atol": atol, "attempts": attempt, "images": len(x), **result}
