"""Spectral normalization: power-iteration estimates against exact norms, per layer type."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from iresnet.lipschitz import exact_spectral_norm, spectral_norm, spectral_norm_modules, update_spectral_norms

# name -> (layer factory, input shape); small enough for a dense SVD of the operator.
LAYERS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "linear": (lambda: nn.Linear(256, 128), (256,)),
    "conv1x1": (lambda: nn.Conv2d(64, 64, 1), (64, 2, 2)),
    "conv3x3": (lambda: nn.Conv2d(8, 8, 3, padding=1), (8, 8, 8)),
    "conv3x3_stride2": (lambda: nn.Conv2d(8, 8, 3, stride=2, padding=1), (8, 8, 8)),
}


def normalized(layer: nn.Module, shape: Sequence[int], coeff: float) -> tuple[nn.Module, object]:
    """A copy of ``layer`` under :func:`spectral_norm` (one step per forward) and its parametrization."""
    copied = spectral_norm(copy.deepcopy(layer), coeff, 1, input_shape=shape if len(shape) == 3 else None)
    ((_, _, parametrization),) = spectral_norm_modules(copied)
    return copied, parametrization


@torch.no_grad()
def layer_accuracy(name: str, tol: float, coeff: float, max_iter: int, device: torch.device | str) -> dict:
    """One random layer (default initialization, doubled): relative error of ``sigma`` after
    construction, steps to ``tol``, the library's stopping rule (``update_spectral_norms`` with
    ``rtol=tol``) against the exact norm, and the exact norm of the normalized layer."""
    make, shape = LAYERS[name]
    layer = make().to(device)
    layer.weight.data.mul_(2.0)  # every norm above coeff: the normalization is active
    exact = exact_spectral_norm(layer, shape)
    copied, sn = normalized(layer, shape, coeff)
    weight = copied.parametrizations.weight.original
    errors = [abs(sn.sigma.item() - exact) / exact]
    while errors[-1] > tol and len(errors) <= max_iter:
        sn.power_iteration(weight, 1)
        errors.append(abs(sn.sigma.item() - exact) / exact)
    updated, _ = normalized(layer, shape, coeff)
    (result,) = update_spectral_norms(updated, atol=0.0, rtol=tol, max_iter=max_iter).values()
    return {
        "exact_sigma": exact,
        "rel_error_after_construction": errors[0],
        "steps_to_tol": len(errors) - 1 if errors[-1] <= tol else math.inf,
        "update_iterations": result.iterations,
        "update_rel_error": abs(result.sigma - exact) / exact,
        "normalized_norm": exact_spectral_norm(updated, shape),
    }


def spectral_accuracy(
    tol: float = 1e-4, coeff: float = 0.98, trials: int = 5, max_iter: int = 2000, seed: int = 0,
    device: torch.device | str = "cpu",
) -> list[dict]:
    """:func:`layer_accuracy` of ``trials`` random layers of every type in :data:`LAYERS`: the
    worst trial's errors, steps and normalized norm, and the mean steps of the stopping rule."""
    rows = []
    for name, (_, shape) in LAYERS.items():
        torch.manual_seed(seed)
        runs = [layer_accuracy(name, tol, coeff, max_iter, device) for _ in range(trials)]
        worst = {key: max(run[key] for run in runs) for key in runs[0]}
        steps = worst["steps_to_tol"]
        rows.append({
            "layer": name,
            "input_shape": list(shape),
            "trials": trials,
            "coeff": coeff,
            "tol": tol,
            "max_rel_error_after_construction": worst["rel_error_after_construction"],
            "max_steps_to_tol": None if math.isinf(steps) else steps,
            "mean_update_iterations": sum(run["update_iterations"] for run in runs) / trials,
            "max_update_rel_error": worst["update_rel_error"],
            "max_normalized_norm": worst["normalized_norm"],
        })  # fmt: skip
    return rows
