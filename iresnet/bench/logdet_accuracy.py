"""Bias and spread of the log-det estimators against the exact value, on small residual branches."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from iresnet.lipschitz import spectral_norm, spectral_norm_modules, update_spectral_norms
from iresnet.logdet import PowerSeriesLogDet, RouletteLogDet, batch_jacobian, exact_logdet
from iresnet.models.blocks import conv_branch

# (name, factory, training mode of the call); every estimator uses one Gaussian probe.
EstimatorSpec = tuple[str, Callable[[], object], bool]


def estimator_specs(series_terms: Sequence[int], roulette_exact_terms: Sequence[int]) -> list[EstimatorSpec]:
    """Truncated series with ``series_terms`` terms; roulette (Poisson(2)) with each number of
    exact terms in training mode; and the protocol's evaluation roulette (20 exact terms)."""
    specs: list[EstimatorSpec] = [
        (f"series n={n}", lambda n=n: PowerSeriesLogDet(n_terms=n), False) for n in series_terms
    ]
    specs += [
        (f"roulette {m} exact", lambda m=m: RouletteLogDet(n_exact_terms=m), True) for m in roulette_exact_terms
    ]
    specs.append(("roulette eval (20 exact)", RouletteLogDet, False))
    return specs


def _normalized(net: nn.Module) -> nn.Module:
    """``net`` with its power iterations run to tolerance, in eval mode."""
    update_spectral_norms(net)
    return net.eval()


def symmetric_linear(coeff: float, dim: int = 64) -> tuple[nn.Module, tuple[int, ...]]:
    """The series' worst case: ``g(x) = W x`` with symmetric ``W`` of eigenvalues spread evenly
    over ``[-coeff, coeff]`` (spectral radius = norm = ``coeff``); input shape ``(dim,)``."""
    layer = nn.Linear(dim, dim, bias=False)
    basis, _ = torch.linalg.qr(torch.randn(dim, dim))
    with torch.no_grad():
        # Norm 2 > coeff, so the normalization rescales it to exactly coeff.
        layer.weight.copy_(basis @ torch.diag(torch.linspace(-2.0, 2.0, dim)) @ basis.T)
    return _normalized(nn.Sequential(spectral_norm(layer, coeff))), (dim,)


def model_branch(coeff: float, shape: Sequence[int] = (2, 8, 8), hidden: int = 16) -> tuple[nn.Module, tuple[int, ...]]:
    """The model's 3-1-3 LipSwish conv branch with every conv's operator norm exactly ``coeff``.

    Raw weights are scaled up so the soft normalization ``W / max(1, sigma / coeff)`` is active
    in every layer. The activations' slopes keep ``||dg/dx||`` well below ``coeff ** 3``.
    """
    channels, height, width = shape
    branch = conv_branch(channels, hidden, (height, width), "3-1-3", "lipswish", coeff)
    with torch.no_grad():
        for _, module, _ in spectral_norm_modules(branch):
            module.parametrizations.weight.original.mul_(10.0)
    return _normalized(branch), tuple(shape)


BLOCKS: dict[str, Callable[[float], tuple[nn.Module, tuple[int, ...]]]] = {
    "symmetric linear": symmetric_linear,
    "conv 3-1-3 LipSwish": model_branch,
}


def jacobian_norms(net: nn.Module, x: Tensor) -> Tensor:
    """``||dg/dx||_2`` per sample, ``(B,)``: how contractive the branch is where it is evaluated."""
    with torch.enable_grad():
        x_in = x.detach().requires_grad_(True)
        jac = batch_jacobian(net(x_in), x_in, create_graph=False)
    return torch.linalg.matrix_norm(jac, ord=2).detach()


@torch.no_grad()
def estimator_error(spec: EstimatorSpec, net: nn.Module, x: Tensor, exact: Tensor, draws: int) -> dict:
    """Bias (± standard error), per-draw standard deviation and mean number of terms of one estimator."""
    name, factory, training = spec
    estimator = factory()
    values, terms = [], []
    for _ in range(draws):
        values.append(estimator(net, x, training)[1])
        terms.append(estimator.last_n_terms)
    errors = torch.stack(values).double() - exact.double()  # (draws, samples)
    return {
        "estimator": name,
        "training_mode": training,
        "mean_terms": sum(terms) / len(terms),
        "bias": errors.mean().item(),
        # Over draws: the samples of one call share its roulette draw.
        "bias_se": (errors.mean(1).std() / draws**0.5).item(),
        "std": errors.var(dim=0).mean().sqrt().item(),
    }


def logdet_accuracy(
    coeffs: Sequence[float],
    specs: Sequence[EstimatorSpec],
    draws: int,
    samples: int = 8,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> list[dict]:
    """For each block of :data:`BLOCKS` and each ``coeff``: the exact log-det at ``samples``
    Gaussian inputs, and :func:`estimator_error` of every estimator over ``draws`` calls."""
    rows = []
    for block, build in BLOCKS.items():
        for coeff in coeffs:
            torch.manual_seed(seed)
            net, shape = build(coeff)
            net = net.to(device)
            x = torch.randn(samples, *shape, device=device)
            exact = exact_logdet(lambda v: v + net(v), x)
            context = {
                "block": block,
                "coeff": coeff,
                "exact_logdet_mean": exact.mean().item(),
                "jacobian_norm_max": jacobian_norms(net, x).max().item(),
            }
            rows += [{**context, **estimator_error(spec, net, x, exact, draws)} for spec in specs]
    return rows
