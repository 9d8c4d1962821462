"""Running the spectral-norm power iterations to convergence (before evaluation or inversion)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from iresnet.lipschitz.spectral_norm import spectral_norm_modules


@dataclass(frozen=True)
class PowerIterationResult:
    """Outcome for one layer: power-iteration steps run, final ``sigma`` of the raw weight, and
    whether the tolerance was met within ``max_iter``."""

    iterations: int
    sigma: float
    converged: bool


def _remaining_change(change: float, previous_change: float) -> float:
    """Estimate of ``|sigma_inf - sigma_k|`` from the last two steps' changes.

    The power-iteration estimate rises geometrically, ``change_{k+1} ~ q change_k`` with
    ``q = (sigma_2 / sigma_1)^2``, so the rest of the climb is ``change_k q / (1 - q)``.
    """
    if change == 0.0:
        return 0.0
    if change >= previous_change:  # not (yet) shrinking, or no previous change
        return math.inf
    ratio = change / previous_change
    return change * ratio / (1.0 - ratio)


@torch.no_grad()
def update_spectral_norms(
    model: nn.Module, atol: float = 1e-4, rtol: float = 1e-4, max_iter: int = 500
) -> dict[str, PowerIterationResult]:
    """Power-iterate every spectral-normalized layer of ``model`` until ``sigma`` settles.

    Per layer, steps run until both the last change of ``sigma`` and the geometric estimate of
    the change still to come are ``<= atol + rtol * sigma``, or ``max_iter`` steps. (The last
    change alone stops too early when ``sigma_2 / sigma_1`` is near 1, and the estimate is a
    lower bound.) ``u``, ``v`` and the stored ``sigma`` are updated in place whatever the
    module's mode. Training-mode forwards take only ``n_power_iterations`` steps, so call this
    before evaluating log-likelihoods or inverting, where the Lipschitz bound has to hold.

    Returns:
        ``{layer name: PowerIterationResult}``.
    """
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1; got max_iter={max_iter!r}.")
    results = {}
    for name, module, sn in spectral_norm_modules(model):
        weight = module.parametrizations.weight.original
        sn.power_iteration(weight, 1)
        sigma = sn.sigma.item()
        change = 0.0  # no earlier change: the rate is unknown until two steps are compared
        converged = False
        iterations = 1
        while not converged and iterations < max_iter:
            sn.power_iteration(weight, 1)
            iterations += 1
            previous_sigma, previous_change = sigma, change
            sigma = sn.sigma.item()
            change = abs(sigma - previous_sigma)
            converged = max(change, _remaining_change(change, previous_change)) <= atol + rtol * sigma
        results[name] = PowerIterationResult(iterations, sigma, converged)
    return results
