"""lipschitz_report on a hand-built model with duck-typed residual blocks."""

import math

import pytest
import torch
from torch import nn

from iresnet.lipschitz import lipschitz_report, spectral_norm, update_spectral_norms


class FakeResidualBlock(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x):
        return x + self.net(x)

    def inverse(self, y):
        return y


def _model() -> nn.Module:
    torch.manual_seed(0)
    big = nn.Linear(4, 4)
    with torch.no_grad():
        big.weight.mul_(10.0)
    small = nn.Linear(4, 4)
    with torch.no_grad():
        small.weight.mul_(0.01)
    return nn.Sequential(
        FakeResidualBlock(
            nn.Sequential(spectral_norm(big, coeff=0.9), nn.ELU(), spectral_norm(small, coeff=0.8))
        ),
        FakeResidualBlock(
            nn.Sequential(spectral_norm(nn.Linear(4, 4), coeff=0.9), nn.ReLU(), nn.Linear(4, 4))
        ),
        spectral_norm(nn.Linear(4, 4), coeff=0.5),
    )


def test_report_layers_and_bounds():
    model = _model()
    sigmas = {name: r.sigma for name, r in update_spectral_norms(model).items()}
    report = lipschitz_report(model)

    assert [layer.name for layer in report.layers] == ["0.net.0", "0.net.2", "1.net.0", "2"]
    by_name = {layer.name: layer for layer in report.layers}
    assert by_name["0.net.0"].sigma == pytest.approx(sigmas["0.net.0"])
    assert by_name["0.net.0"].normalized_sigma == pytest.approx(0.9)  # raw sigma > coeff
    small = by_name["0.net.2"]
    assert small.sigma < small.coeff and small.normalized_sigma == pytest.approx(small.sigma)

    first, second = report.branches
    assert first.name == "0" and first.layers == ("0.net.0", "0.net.2")
    assert first.bound == pytest.approx(0.9 * small.sigma)
    # An unnormalized linear layer makes the branch unbounded.
    assert second.unnormalized == ("1.net.2",) and math.isinf(second.bound)
    assert report.any_bound_reaches_one
    assert report.max_layer_sigma == pytest.approx(max(layer.normalized_sigma for layer in report.layers))

    table = str(report)
    assert "0.net.0" in table and "residual branch" in table and "unnormalized: 1.net.2" in table
    as_dict = report.to_dict()
    assert as_dict["any_bound_reaches_one"] is True
    assert as_dict["branches"][0]["layers"] == ("0.net.0", "0.net.2")


def test_report_without_violations():
    model = _model()
    del model[1]
    update_spectral_norms(model)
    report = lipschitz_report(model)
    assert len(report.branches) == 1
    assert not report.any_bound_reaches_one
