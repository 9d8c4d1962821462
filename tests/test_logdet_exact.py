"""Exact log-determinants: agreement with autograd's dense Jacobian, differentiability, no_grad."""

from __future__ import annotations

import pytest
import torch
from test_logdet_nets import contractive_mlp, dense_jacobians, exact_logdet_reference, tied_conv
from torch import nn

from iresnet.logdet import ExactLogDet, batch_jacobian, exact_logdet


@pytest.mark.parametrize(
    "net, shape",
    [(contractive_mlp(3, 0.9), (5, 3)), (tied_conv(2, 3, 0.9), (3, 2, 3, 3))],
    ids=["mlp", "conv"],
)
def test_exact_logdet_matches_slogdet_of_autograd_jacobian(net, shape):
    torch.manual_seed(0)
    x = torch.randn(shape)

    def flow(z):
        return 2.0 * z + net(z)  # any map: not of the form z + g(z)

    expected = torch.linalg.slogdet(dense_jacobians(flow, x)).logabsdet
    torch.testing.assert_close(exact_logdet(flow, x), expected, atol=1e-5, rtol=1e-5)


def test_batch_jacobian_layout():
    x = torch.randn(4, 3, requires_grad=True)
    weight = torch.randn(2, 3)
    out = torch.tanh(x @ weight.T)
    jac = batch_jacobian(out, x, create_graph=False)
    assert jac.shape == (4, 2, 3)
    torch.testing.assert_close(jac, (1 - out.detach() ** 2)[:, :, None] * weight)


def test_exact_estimator_returns_g_and_logdet_of_identity_plus_jacobian():
    net = contractive_mlp(3, 0.9)
    x = torch.randn(6, 3)
    g_x, logdet = ExactLogDet()(net, x, training=True)
    torch.testing.assert_close(g_x, net(x))
    torch.testing.assert_close(logdet, exact_logdet_reference(net, x), atol=1e-5, rtol=1e-5)


def test_exact_estimator_gradient_matches_reference_and_trains_a_2d_flow():
    torch.manual_seed(0)
    net = contractive_mlp(2, 0.9)
    x = torch.randn(32, 2)
    _, logdet = ExactLogDet()(net, x, training=True)
    params = list(net.parameters())
    grads = torch.autograd.grad(logdet.mean(), params, allow_unused=True, materialize_grads=True)
    expected = torch.autograd.grad(
        exact_logdet_reference(net, x).mean(), params, allow_unused=True, materialize_grads=True
    )
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)

    # Maximum likelihood of a stretched Gaussian: y = x + g(x) with y ~ N(0, I).
    data = torch.randn(256, 2) * torch.tensor([0.5, 1.5])
    estimator, opt = ExactLogDet(), torch.optim.Adam(net.parameters(), lr=1e-2)

    def nll() -> torch.Tensor:
        g_x, logdet = estimator(net, data, training=True)
        return (0.5 * (data + g_x).pow(2).sum(1) - logdet).mean()

    start = nll().item()
    for _ in range(30):
        opt.zero_grad()
        nll().backward()
        opt.step()
    assert nll().item() < start - 0.05


def test_exact_under_no_grad_is_detached_and_correct():
    net = contractive_mlp(3, 0.9)
    x = torch.randn(6, 3)
    with torch.no_grad():
        g_x, logdet = ExactLogDet()(net, x, training=False)
        plain = exact_logdet(lambda z: z + net(z), x)
    assert g_x.grad_fn is None and logdet.grad_fn is None and plain.grad_fn is None
    torch.testing.assert_close(logdet, exact_logdet_reference(net, x).detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(plain, logdet)


def test_exact_logdet_rejects_non_square_maps():
    with pytest.raises(ValueError, match="square"):
        exact_logdet(nn.Linear(3, 2), torch.randn(4, 3))
