"""Running the spectral-norm power iterations to convergence (before evaluation or inversion)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from iresnet.lipschitz.parametrization import SpectralNorm
from iresnet.lipschitz.spectral_norm import spectral_norm_modules


@dataclass(frozen=True)
class PowerIterationResult:
    """Outcome for one layer: products with ``A^T A`` taken, final ``sigma`` of the raw weight,
    and whether the tolerance was met within ``max_iter`` products."""

    iterations: int
    sigma: float
    converged: bool


def _lanczos(apply: Callable[[Tensor], Tensor], start: Tensor, steps: int) -> tuple[Tensor, Tensor, Tensor]:
    """``steps`` Lanczos steps on ``L`` symmetric operators at once: ``apply`` maps ``(L, n)`` to
    ``(L, n)`` row by row, ``start`` is ``(L, n)``. Full reorthogonalization. Returns, per row, the
    largest Ritz value ``(L,)``, its unit Ritz vector ``(L, n)`` and residual ``||apply(v) - theta v||``
    ``(L,)``."""
    rows, n = start.shape
    k = min(steps, n)
    basis = start.new_zeros(rows, k, n)
    alphas = start.new_zeros(rows, k)
    betas = start.new_zeros(rows, k)
    # Positions after a row's Krylov space is exhausted (an invariant subspace: its Ritz pair is
    # then exact); the row goes on with zero vectors there.
    exhausted = torch.zeros(rows, k, dtype=torch.bool, device=start.device)
    q = start / start.norm(dim=1, keepdim=True)
    for j in range(k):
        basis[:, j] = q
        w = apply(q)
        alphas[:, j] = (q * w).sum(1)
        done = basis[:, : j + 1]
        for _ in range(2):  # twice is enough to keep the basis orthogonal to working precision
            w = w - torch.bmm(torch.bmm(w.unsqueeze(1), done.transpose(1, 2)), done).squeeze(1)
        betas[:, j] = w.norm(dim=1)
        alive = betas[:, j] > 1e-12 * alphas[:, j].abs()
        if j + 1 < k:
            exhausted[:, j + 1] = exhausted[:, j] | ~alive
        q = torch.where(alive.unsqueeze(1), w / torch.where(alive, betas[:, j], 1.0).unsqueeze(1), 0.0)
    # Exhausted positions get a diagonal below every Ritz value of the row (a Gershgorin bound),
    # so that the top Ritz vector never falls on their zero basis vectors (e.g. a zero weight).
    bound = alphas.abs().sum(1, keepdim=True) + 2 * betas.sum(1, keepdim=True) + 1
    off = torch.where(exhausted[:, 1:], 0.0, betas[:, : k - 1])
    diagonal = torch.where(exhausted, -bound, alphas)
    tridiagonal = torch.diag_embed(diagonal) + torch.diag_embed(off, 1) + torch.diag_embed(off, -1)
    values, vectors = torch.linalg.eigh(tridiagonal)
    ritz = vectors[..., -1]
    v = torch.bmm(ritz.unsqueeze(1), basis).squeeze(1)
    return values[:, -1], v / v.norm(dim=1, keepdim=True), (betas[:, -1] * ritz[:, -1]).abs()


@torch.no_grad()
def top_right_singular_vector(
    gram: Callable[[Tensor], Tensor],
    start: Tensor,
    atol: float = 1e-4,
    rtol: float = 1e-4,
    max_iter: int = 500,
    lanczos_steps: int = 24,
) -> tuple[Tensor, int, bool | Tensor]:
    """Top right singular vector ``v`` of an operator ``A``, given ``gram(x) = A^T A x``.

    Restarted Lanczos on ``A^T A`` from ``start`` (a random vector if it is zero):
    ``lanczos_steps`` products per restart, restarting from the Ritz vector until the Ritz
    residual ``||A^T A v - theta v||`` is at most ``(atol + rtol * sigma) * sigma`` with
    ``sigma = sqrt(theta)``, or ``max_iter`` products in all. Works in ``start``'s dtype, so
    pass float64 for a tight tolerance. ``A``'s norm is then ``||A v||``.

    ``start`` is ``(n,)`` for one operator, or ``(L, n)`` for ``L`` operators solved together:
    ``gram`` then maps ``(L, n)`` to ``(L, n)`` row by row (e.g. a grouped convolution), and the
    restarts go on until every row meets the tolerance. One batched product costs little more
    than one product of a small layer, so this cuts the per-operator overhead ``L``-fold.

    Returns:
        ``(v, products, converged)``: the unit vector(s) (``start``'s shape), the products with
        ``A^T A`` taken (per row) and whether the tolerance was met (a bool, or ``(L,)`` bools).
    """
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1; got max_iter={max_iter!r}.")
    single = start.dim() == 1
    v = start.unsqueeze(0) if single else start
    apply = (lambda x: gram(x[0]).unsqueeze(0)) if single else gram
    empty = v.norm(dim=1, keepdim=True) == 0
    if empty.any():  # drawn only then: a refresh in training leaves the random stream alone
        v = torch.where(empty, torch.randn_like(v), v)
    products, converged = 0, torch.zeros(len(v), dtype=torch.bool, device=v.device)
    while products < max_iter and not converged.all():
        steps = min(lanczos_steps, max_iter - products)
        theta, v, residual = _lanczos(apply, v, steps)
        products += min(steps, v.shape[1])
        sigma = theta.clamp_min(0.0).sqrt()
        converged = residual <= (atol + rtol * sigma) * sigma
    return (v[0], products, bool(converged[0])) if single else (v, products, converged)


@dataclass(frozen=True)
class TopSingularPair:
    """One layer's top singular pair of its raw weight's operator ``A(W)``, in the solver's dtype:
    unit ``v`` (the right vector's shape), ``image = A v`` and ``sigma = ||A v||``."""

    v: Tensor
    image: Tensor
    sigma: Tensor
    products: int
    converged: bool


@torch.no_grad()
def top_singular_pairs(
    layers: Iterable[tuple[str, nn.Module, SpectralNorm]],
    atol: float = 1e-4,
    rtol: float = 1e-4,
    max_iter: int = 500,
    lanczos_steps: int = 24,
    dtype: torch.dtype = torch.float64,
    generator: torch.Generator | None = None,
) -> dict[str, TopSingularPair]:
    """Top singular pair of each layer's raw weight, changing nothing.

    ``layers``: ``(name, module, parametrization)`` as :func:`~iresnet.lipschitz.spectral_norm_modules`
    yields them, initialized.

    Restarted Lanczos (:func:`top_right_singular_vector`) from each layer's stored ``v``; with a
    ``generator``, from ``v`` plus a random unit vector drawn from it (not from the global stream),
    so that a stored ``v`` orthogonal to the current top vector (a stale one, after the weight
    moved) cannot hide it. Layers of one operator shape
    (:meth:`~iresnet.lipschitz.SpectralNorm.group_key`) are solved together, one grouped product
    for all of them, until every one of them converges.

    Returns:
        ``{layer name: TopSingularPair}`` in the model's order; ``products`` is its group's.
    """
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1; got max_iter={max_iter!r}.")
    groups: dict[tuple, list[tuple[str, SpectralNorm, Tensor]]] = {}
    pairs: dict[str, TopSingularPair | None] = {}  # filled group by group, in the model's order
    for name, module, sn in layers:
        sn.check_initialized()
        weight = module.parametrizations.weight.original.detach()
        groups.setdefault(sn.group_key(weight), []).append((name, sn, weight))
        pairs[name] = None
    # A model's blocks repeat shapes, and one grouped product costs about what one small product
    # does: per-layer overhead, not arithmetic, dominates a refresh layer by layer.
    for members in groups.values():
        names, norms, raw = zip(*members)
        sn = norms[0]
        weights = torch.stack(raw).to(dtype)
        shape = sn._v.shape

        def gram(x: Tensor) -> Tensor:
            vectors = x.view(len(x), *shape)
            return sn.adjoints(weights, sn.operators(weights, vectors)).flatten(1)

        starts = torch.stack([norm._v.flatten() for norm in norms]).to(dtype)
        if generator is not None:
            noise = torch.randn(starts.shape, generator=generator, dtype=dtype, device=generator.device)
            starts = F.normalize(starts, dim=1) + F.normalize(noise.to(starts.device), dim=1)
        v, products, converged = top_right_singular_vector(gram, starts, atol, rtol, max_iter, lanczos_steps)
        images = sn.operators(weights, v.view(len(v), *shape))
        sigmas = images.flatten(1).norm(dim=1)
        for i, name in enumerate(names):
            pairs[name] = TopSingularPair(v[i].view(shape), images[i], sigmas[i], products, bool(converged[i]))
    return pairs


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
    below ``sigma_1``, and the layer's norm then exceeds ``coeff``. This runs restarted Lanczos on
    ``A^T A`` instead (:func:`top_singular_pairs`),
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
        ``{layer name: PowerIterationResult}`` in the model's order; ``iterations`` is the
        products its group took.
    """
    layers = list(spectral_norm_modules(model))
    pairs = top_singular_pairs(layers, atol, rtol, max_iter, lanczos_steps, dtype)
    results = {}
    for name, _, norm in layers:
        pair = pairs[name]
        norm._v.copy_(pair.v)
        norm._u.copy_(pair.image / pair.sigma.clamp_min(norm.eps))
        norm._sigma.copy_(pair.sigma)
        results[name] = PowerIterationResult(pair.products, pair.sigma.item(), pair.converged)
    return results
