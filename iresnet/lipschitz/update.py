"""Running the spectral-norm power iterations to convergence (before evaluation or inversion)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from iresnet.lipschitz.spectral_norm import spectral_norm_modules


@dataclass(frozen=True)
class PowerIterationResult:
    """Outcome for one layer: products with ``A^T A`` taken, final ``sigma`` of the raw weight,
    and whether the tolerance was met within ``max_iter`` products."""

    iterations: int
    sigma: float
    converged: bool


def _lanczos(apply: Callable[[Tensor], Tensor], start: Tensor, steps: int) -> tuple[float, Tensor, float]:
    """``steps`` Lanczos steps on the symmetric operator ``apply`` from ``start`` (1-D, float64),
    with full reorthogonalization: the largest Ritz value, its unit Ritz vector and residual
    ``||apply(v) - theta v||``."""
    basis = start.new_zeros(min(steps, start.numel()), start.numel())
    alphas, betas = [], []
    q = start / start.norm()
    for j in range(len(basis)):
        basis[j] = q
        w = apply(q)
        alphas.append(torch.dot(q, w))
        for _ in range(2):  # twice is enough to keep the basis orthogonal to working precision
            w = w - basis[: j + 1].T @ (basis[: j + 1] @ w)
        betas.append(w.norm())
        if betas[-1] <= 1e-12 * alphas[-1].abs():  # an invariant subspace: exact
            break
        q = w / betas[-1]
    k = len(alphas)
    tridiagonal = torch.diag(torch.stack(alphas))
    if k > 1:
        off = torch.stack(betas[: k - 1])
        tridiagonal = tridiagonal + torch.diag(off, 1) + torch.diag(off, -1)
    values, vectors = torch.linalg.eigh(tridiagonal)
    ritz = vectors[:, -1]
    v = basis[:k].T @ ritz
    return values[-1].item(), v / v.norm(), (betas[-1] * ritz[-1]).abs().item()


@torch.no_grad()
def top_right_singular_vector(
    gram: Callable[[Tensor], Tensor],
    start: Tensor,
    atol: float = 1e-4,
    rtol: float = 1e-4,
    max_iter: int = 500,
    lanczos_steps: int = 24,
) -> tuple[Tensor, int, bool]:
    """Top right singular vector ``v`` of an operator ``A``, given ``gram(x) = A^T A x``.

    Restarted Lanczos on ``A^T A`` from ``start`` (1-D; a random vector if it is zero):
    ``lanczos_steps`` products per restart, restarting from the Ritz vector until the Ritz
    residual ``||A^T A v - theta v||`` is at most ``(atol + rtol * sigma) * sigma`` with
    ``sigma = sqrt(theta)``, or ``max_iter`` products in all. Works in ``start``'s dtype, so
    pass float64 for a tight tolerance. ``A``'s norm is then ``||A v||``.

    Returns:
        ``(v, products, converged)``: the unit vector, the products with ``A^T A`` taken and
        whether the tolerance was met.
    """
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1; got max_iter={max_iter!r}.")
    v = start if start.norm() > 0 else torch.randn_like(start)
    products, converged = 0, False
    while products < max_iter and not converged:
        steps = min(lanczos_steps, max_iter - products)
        theta, v, residual = _lanczos(gram, v, steps)
        products += min(steps, v.numel())
        sigma = max(theta, 0.0) ** 0.5
        converged = residual <= (atol + rtol * sigma) * sigma
    return v, products, converged


@torch.no_grad()
def update_spectral_norms(
    model: nn.Module,
    atol: float = 1e-4,
    rtol: float = 1e-4,
    max_iter: int = 500,
    lanczos_steps: int = 24,
    dtype: torch.dtype = torch.float64,
) -> dict[str, PowerIterationResult]:
    """Bring every spectral-normalized layer's ``u``, ``v``, ``sigma`` to the top singular pair.

    Training-mode forwards take only ``n_power_iterations`` power-iteration steps per call, so
    call this before evaluating log-likelihoods or inverting, where the Lipschitz bound has to
    hold. Power iteration converges at the rate ``(sigma_2 / sigma_1)^2``, which is near 1 for
    the clustered spectra of random convolutions: there a "sigma stopped changing" rule stops
    0.2-0.3% below ``sigma_1`` (measured on 3x3 convs), and the layer's norm then exceeds
    ``coeff``. This runs restarted Lanczos on ``A^T A`` instead (:func:`top_right_singular_vector`),
    in float64, from the current ``v``, to a Ritz residual of at most ``(atol + rtol * sigma) *
    sigma`` (an eigenvalue of ``A^T A`` lies that close to ``theta = sigma^2``, so ``sigma`` is
    within about ``(atol + rtol * sigma) / 2``) or ``max_iter`` products in all. Then ``v`` is
    the Ritz vector, ``u = A v / ||A v||`` and ``sigma = ||A v||``, whatever the module's mode. On random
    3x3 convolutions this reaches 1e-8 relative error in 24-72 products, where power iteration
    stalled at 2e-3 after 50-900.

    ``max_iter = lanczos_steps = k`` makes it one warm-started Krylov refresh of ``k`` products
    per layer, whatever the tolerance: what training runs after every optimizer step
    (``spectral_norm_lanczos_steps`` of :class:`~iresnet.training.FlowLightningModule`), there in
    the weights' own ``dtype`` (float32 is enough for a handful of steps).

    Returns:
        ``{layer name: PowerIterationResult}``.
    """
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1; got max_iter={max_iter!r}.")
    results = {}
    for name, module, sn in spectral_norm_modules(model):
        sn.check_initialized()
        weight = module.parametrizations.weight.original.detach().to(dtype)
        shape = sn._v.shape

        def gram(x: Tensor) -> Tensor:
            return sn.adjoint(weight, sn.operator(weight, x.view(shape))).flatten()

        v, products, converged = top_right_singular_vector(
            gram, sn._v.to(dtype).flatten(), atol, rtol, max_iter, lanczos_steps
        )
        image = sn.operator(weight, v.view(shape))
        sigma = image.norm()
        sn._v.copy_(v.view(shape))
        sn._u.copy_(image / sigma.clamp_min(sn.eps))
        sn._sigma.copy_(sigma)
        results[name] = PowerIterationResult(products, sigma.item(), converged)
    return results
