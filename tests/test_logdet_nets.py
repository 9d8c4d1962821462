"""Contractive residual branches ``g`` for the logdet and inverse tests (no lipschitz room needed).

Each is rescaled with the dense SVD of its linear maps, so ``Lip(g) <= coeff`` exactly:

* ``contractive_mlp``: ``Linear -> ELU -> Linear -> ELU -> Linear`` with independent random
  weights, each of spectral norm ``coeff^(1/3)``. Typical Jacobians are far below the bound.
* ``tied_mlp`` / ``tied_conv``: ``g(x) = -A^T tanh(A x + b)`` with ``||A||_2^2 = coeff``,
  so ``J = -A^T diag(tanh') A`` has eigenvalues in ``[-coeff, 0]``, close to ``-coeff`` for
  small inputs: the slowest case for fixed-point inversion and series truncation.

The module also tests these helpers, so that the other tests can rely on them.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torch.nn import functional as F


def _spectral_norm(matrix: Tensor) -> Tensor:
    return torch.linalg.matrix_norm(matrix, ord=2)


def _conv_matrix(weight: Tensor, sample_shape: tuple[int, ...]) -> Tensor:
    """Dense matrix of ``x -> conv2d(x, weight, padding=1)`` on inputs of ``sample_shape``."""
    d = int(torch.tensor(sample_shape).prod())
    basis = torch.eye(d, dtype=weight.dtype).view(d, *sample_shape)
    return F.conv2d(basis, weight, padding=1).flatten(1).T


def contractive_mlp(dim: int, coeff: float, hidden: int = 16, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    layers = [nn.Linear(dim, hidden), nn.ELU(), nn.Linear(hidden, hidden), nn.ELU(), nn.Linear(hidden, dim)]
    with torch.no_grad():
        for layer in layers[::2]:
            layer.weight.mul_(coeff ** (1 / 3) / _spectral_norm(layer.weight))
    return nn.Sequential(*layers)


class _Tied(nn.Module):
    """``g(x) = -A^T tanh(A x + b)`` for a linear map ``A`` given with its adjoint."""

    def forward(self, x: Tensor) -> Tensor:
        return -self.adjoint(torch.tanh(self.apply_a(x) + self.bias))


class TiedMLP(_Tied):
    def __init__(self, dim: int, coeff: float) -> None:
        super().__init__()
        weight = torch.randn(dim, dim)
        self.weight = nn.Parameter(weight * coeff**0.5 / _spectral_norm(weight))
        self.bias = nn.Parameter(0.1 * torch.randn(dim))

    def apply_a(self, x: Tensor) -> Tensor:
        return x @ self.weight.T

    def adjoint(self, h: Tensor) -> Tensor:
        return h @ self.weight


class TiedConv(_Tied):
    def __init__(self, channels: int, size: int, coeff: float, hidden: int) -> None:
        super().__init__()
        weight = torch.randn(hidden, channels, 3, 3)
        norm = _spectral_norm(_conv_matrix(weight, (channels, size, size)))
        self.weight = nn.Parameter(weight * coeff**0.5 / norm)
        self.bias = nn.Parameter(0.1 * torch.randn(hidden, 1, 1))

    def apply_a(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight, padding=1)

    def adjoint(self, h: Tensor) -> Tensor:
        return F.conv_transpose2d(h, self.weight, padding=1)


def tied_mlp(dim: int, coeff: float, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return TiedMLP(dim, coeff)


def tied_conv(channels: int, size: int, coeff: float, hidden: int = 4, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return TiedConv(channels, size, coeff, hidden)


def dense_jacobians(fn, x: Tensor, create_graph: bool = False) -> Tensor:
    """Reference per-sample Jacobians ``(B, D, D)`` by ``torch.autograd.functional.jacobian``."""

    def one(xi: Tensor) -> Tensor:
        jac = torch.autograd.functional.jacobian(lambda z: fn(z[None])[0], xi, create_graph=create_graph)
        return jac.reshape(xi.numel(), xi.numel())

    return torch.stack([one(xi) for xi in x])


def basis_probes(like: Tensor, kind: str = "gaussian", n_probes: int = 1) -> Tensor:
    """``sqrt(D) e_i`` for ``i = 1..D``: with these probes the Hutchinson average is the exact trace."""
    d = like[0].numel()
    scaled = torch.eye(d, dtype=like.dtype) * d**0.5
    return scaled.unsqueeze(1).expand(d, like.shape[0], d).reshape(d, *like.shape)


def use_exact_traces(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the series estimators use :func:`basis_probes`, removing all probe noise."""
    monkeypatch.setattr("iresnet.logdet.base.sample_probe", basis_probes)


def series_from_jacobians(jac: Tensor, coeffs: list[float]) -> Tensor:
    """``sum_k (-1)^(k+1) c_k tr(J^k) / k`` from dense Jacobians ``(B, D, D)``: ``(B,)``."""
    total, power = 0.0, torch.eye(jac.shape[-1], dtype=jac.dtype)
    for k, c in enumerate(coeffs, start=1):
        power = power @ jac
        total = total + (-1) ** (k + 1) * c / k * power.diagonal(dim1=1, dim2=2).sum(-1)
    return total


def exact_logdet_reference(net: nn.Module, x: Tensor) -> Tensor:
    """``log det(I + J_g(x))`` per sample via ``torch.autograd.functional.jacobian``
    (differentiable w.r.t. the parameters of ``net``)."""
    jac = dense_jacobians(net, x, create_graph=True)
    return torch.linalg.slogdet(torch.eye(jac.shape[-1]) + jac).logabsdet


# ------------------------------------------------------------------ tests of the helpers


@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda c: contractive_mlp(5, c), (64, 5)),
        (lambda c: tied_mlp(5, c), (64, 5)),
        (lambda c: tied_conv(2, 4, c), (16, 2, 4, 4)),
    ],
)
def test_helpers_are_contractive(make, shape):
    """Jacobian spectral norms never exceed ``coeff``; the tied nets come close to it."""
    coeff = 0.9
    net = make(coeff)
    x = 0.3 * torch.randn(shape)
    norms = _spectral_norm(dense_jacobians(net, x))
    assert norms.max() <= coeff + 1e-5
    if not isinstance(net, nn.Sequential):
        assert norms.max() > 0.8 * coeff


def test_tied_conv_matches_its_dense_operator():
    net = tied_conv(2, 4, 0.9)
    x = torch.randn(3, 2, 4, 4)
    a = _conv_matrix(net.weight.detach(), (2, 4, 4))
    pre = x.flatten(1) @ a.T + net.bias.detach().expand(4, 4, 4).flatten()
    expected = -(torch.tanh(pre) @ a)
    torch.testing.assert_close(net(x).flatten(1), expected.detach(), atol=1e-5, rtol=1e-5)
