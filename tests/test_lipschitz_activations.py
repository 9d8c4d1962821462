"""LipSwish and CLipSwish are 1-Lipschitz; the activation factory."""

import pytest
import torch
from torch import nn

from iresnet.lipschitz import CLipSwish, LipSwish, activation_channel_multiplier, get_activation
from iresnet.lipschitz.activations import CLIPSWISH_SCALE
from iresnet.ops.lipswish import LIPSWISH_SCALE


def _set_beta(act: LipSwish, beta: torch.Tensor) -> None:
    with torch.no_grad():
        act.raw_beta.copy_(torch.log(torch.expm1(beta)))


def test_lipswish_starts_at_beta_one():
    torch.testing.assert_close(LipSwish(4).beta, torch.ones(4))
    torch.testing.assert_close(LipSwish().beta, torch.ones(1))


@pytest.mark.parametrize("beta", [0.1, 0.5, 1.0, 2.0, 10.0])
def test_lipswish_derivative_is_at_most_one(beta):
    act = LipSwish().double()
    _set_beta(act, torch.tensor([beta], dtype=torch.float64))
    x = torch.linspace(-50, 50, 100_001, dtype=torch.float64, requires_grad=True).reshape(1, -1)
    (slope,) = torch.autograd.grad(act(x).sum(), x)
    assert slope.abs().max() <= 1.0
    assert slope.max() > 0.999  # the 1.1 scale is nearly tight


def test_clipswish_constant_is_the_jacobian_bound():
    # The Jacobian norm at x is sqrt(f'(x)^2 + f'(-x)^2) (see activations.py); its sup with the
    # 1.1 scale alone must lie just under CLIPSWISH_SCALE.
    z = torch.linspace(-20, 20, 400_001, dtype=torch.float64)
    s = torch.sigmoid(z) * (1 + z * (1 - torch.sigmoid(z)))
    sup = ((s**2 + s.flip(0) ** 2).sqrt() / LIPSWISH_SCALE).max().item()
    assert sup == pytest.approx(1.00397, abs=1e-5)
    assert sup <= CLIPSWISH_SCALE


@pytest.mark.parametrize("cls", [LipSwish, CLipSwish])
def test_dense_jacobian_norm_is_at_most_one(cls):
    torch.manual_seed(0)
    act = cls(3).double()
    _set_beta(act if cls is LipSwish else act.lipswish, torch.tensor([0.3, 1.0, 4.0], dtype=torch.float64))
    for _ in range(20):
        x = 3 * torch.randn(1, 3, 2, 2, dtype=torch.float64)
        jacobian = torch.autograd.functional.jacobian(act, x).reshape(-1, x.numel())
        assert torch.linalg.matrix_norm(jacobian, ord=2) <= 1.0


def test_clipswish_worst_case_is_tight():
    # At beta x = 2.3994 the LipSwish slope peaks, where the CLipSwish Jacobian norm is largest.
    act = CLipSwish().double()
    x = torch.full((1, 1), 2.3994, dtype=torch.float64)
    jacobian = torch.autograd.functional.jacobian(act, x).reshape(2, 1)
    assert 0.999 < torch.linalg.matrix_norm(jacobian, ord=2) <= 1.0


def test_clipswish_doubles_channels():
    assert CLipSwish(4)(torch.randn(2, 4, 3, 3)).shape == (2, 8, 3, 3)
    assert CLipSwish()(torch.randn(2, 4)).shape == (2, 8)


@pytest.mark.parametrize(
    "name, cls, multiplier",
    [
        ("elu", nn.ELU, 1),
        ("relu", nn.ReLU, 1),
        ("softplus", nn.Softplus, 1),
        ("LipSwish", LipSwish, 1),
        ("clipswish", CLipSwish, 2),
    ],
)
def test_get_activation(name, cls, multiplier):
    assert isinstance(get_activation(name, num_channels=3), cls)
    assert activation_channel_multiplier(name) == multiplier


def test_unknown_activation_lists_valid_names():
    with pytest.raises(ValueError, match="elu, relu, softplus, lipswish, clipswish"):
        get_activation("tanh")
    with pytest.raises(ValueError, match="unknown activation"):
        activation_channel_multiplier("swish")
