"""Products by the layers' own adjoints equal autograd's VJPs, and the estimators give the same
values and Neumann rows through them as through autograd."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import iresnet.logdet.series as series
from iresnet.lipschitz import spectral_norm
from iresnet.lipschitz.activations import CLipSwish, LipSwish
from iresnet.logdet.products import sequential_products
from iresnet.ops import Conv2d


def conv_branch(channels: int = 2) -> nn.Sequential:
    """The presets' layout: LipSwish, 3x3 conv, LipSwish, 1x1 conv, LipSwish, 3x3 conv."""
    return nn.Sequential(
        LipSwish(channels),
        spectral_norm(Conv2d(channels, 8, 3, padding=1), coeff=0.9, input_shape=(6, 6)),
        LipSwish(8),
        spectral_norm(Conv2d(8, 8, 1), coeff=0.9),
        LipSwish(8),
        spectral_norm(Conv2d(8, channels, 3, padding=1), coeff=0.9, input_shape=(6, 6)),
    ).double()


def fc_branch() -> nn.Sequential:
    return nn.Sequential(
        LipSwish(), spectral_norm(nn.Linear(5, 7), coeff=0.9), LipSwish(), spectral_norm(nn.Linear(7, 5), coeff=0.9)
    ).double()


def autograd_products(net: nn.Module, x: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.clone().requires_grad_(True)
    g = net(x)
    return g.detach(), torch.stack([torch.autograd.grad(g, x, row, retain_graph=True)[0] for row in u])


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("make, shape", [(conv_branch, (3, 2, 6, 6)), (fc_branch, (3, 5))])
def test_products_equal_autograd_vjps(make, shape, mode):
    torch.manual_seed(0)
    net = make().train(mode == "train")
    twin = copy.deepcopy(net)
    x = torch.randn(shape, dtype=torch.float64)
    u = torch.randn(4, *shape, dtype=torch.float64)
    g, product = sequential_products(net, x)
    g_ref, rows_ref = autograd_products(twin, x, u)
    torch.testing.assert_close(g, g_ref, rtol=1e-12, atol=1e-12)
    u_before = u.clone()
    torch.testing.assert_close(product(u), rows_ref, rtol=1e-12, atol=1e-12)
    assert torch.equal(u, u_before)  # the caller's rows are not written into
    # Training mode: one power-iteration step per weight, as the forward of the twin took.
    for a, b in zip(net.buffers(), twin.buffers()):
        torch.testing.assert_close(a, b)


def test_other_branches_are_left_to_autograd():
    torch.manual_seed(0)
    x = torch.randn(2, 5, dtype=torch.float64)
    assert sequential_products(nn.Sequential(nn.ELU(), nn.Linear(5, 5)).double(), x) is None
    assert sequential_products(nn.Sequential(CLipSwish(5), nn.Linear(10, 5)).double(), x) is None
    assert sequential_products(nn.Linear(5, 5).double(), x) is None  # not a Sequential
    hooked = fc_branch()
    hooked[1].register_forward_hook(lambda module, args, out: out * 2)
    assert sequential_products(hooked, x) is None
    images = torch.randn(2, 2, 6, 6, dtype=torch.float64)
    circular = nn.Sequential(LipSwish(2), nn.Conv2d(2, 2, 3, padding=1, padding_mode="circular")).double()
    assert sequential_products(circular, images) is None


@pytest.mark.parametrize("neumann", [False, True])
def test_chunked_series_is_the_same_through_either_products(monkeypatch, neumann):
    """Values and Neumann rows of the graph-free estimator, chunk by chunk, to rounding."""
    torch.manual_seed(0)
    net = conv_branch().eval()
    x = torch.randn(5, 2, 6, 6, dtype=torch.float64)
    probes = torch.randn(2, *x.shape, dtype=torch.float64)
    coeffs = [1.0, 1.0, 1.5, 3.0]
    g, value, rows = series.chunked_series_terms(net, x, probes, coeffs, 2, neumann)
    monkeypatch.setattr(series, "sequential_products", lambda net, x, used=None: None)
    g_ref, value_ref, rows_ref = series.chunked_series_terms(net, x, probes, coeffs, 2, neumann)
    torch.testing.assert_close(g, g_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(value, value_ref, rtol=1e-12, atol=1e-12)
    if neumann:
        for row, row_ref in zip(rows, rows_ref):
            torch.testing.assert_close(row, row_ref, rtol=1e-12, atol=1e-12)
    else:
        assert rows is None and rows_ref is None
