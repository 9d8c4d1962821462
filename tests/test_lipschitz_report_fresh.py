"""lipschitz_report from norms computed afresh: checked against dense SVD of each layer's operator,
and able to fail: a stale estimate shows as a norm above coeff, and the audit names the layer."""

import warnings
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from iresnet.flows import FlowSequential, ResidualBlock
from iresnet.lipschitz import lipschitz_report, spectral_norm, update_spectral_norms
from iresnet.lipschitz.report import COEFF_SLACK
from iresnet.logdet import ExactLogDet
from iresnet.models import ToyFlow
from iresnet.training import InvertibilityAudit, InvertibilityWarning

COEFF = 0.9


def _dense_norm(module: nn.Module, weight: torch.Tensor) -> float:
    """``||A(weight)||_2`` by dense SVD: the matrix, or the zero-padded convolution on the
    layer's input size written out column by column."""
    if isinstance(module, nn.Linear) or module.kernel_size == (1, 1):
        return torch.linalg.matrix_norm(weight.flatten(1).double(), ord=2).item()
    sn = module.parametrizations.weight[0]
    c, (h, w) = module.in_channels, sn.input_hw
    basis = torch.eye(c * h * w, dtype=torch.float64).view(-1, c, h, w)
    columns = F.conv2d(basis, weight.double(), None, sn.stride, sn.padding, sn.dilation)
    return torch.linalg.matrix_norm(columns.flatten(1).T, ord=2).item()


def _branch() -> nn.Sequential:
    return nn.Sequential(
        spectral_norm(nn.Conv2d(2, 3, 3, padding=1), COEFF, input_shape=(2, 5, 5)),
        nn.ELU(),
        spectral_norm(nn.Conv2d(3, 3, 3, stride=2, padding=1), COEFF, input_shape=(3, 5, 5)),
        nn.ELU(),
        spectral_norm(nn.Conv2d(3, 2, 1), COEFF),
    )


def _layers(model: nn.Module) -> dict[str, nn.Module]:
    return {name: m for name, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}


def test_fresh_norms_match_dense_svd_of_the_raw_and_the_used_weights():
    torch.manual_seed(0)
    model = nn.Sequential(_branch(), spectral_norm(nn.Linear(6, 5), COEFF)).eval()
    update_spectral_norms(model)
    with torch.no_grad():  # the weights move after the refresh: the estimates are stale
        for module in _layers(model).values():
            module.parametrizations.weight.original.add_(torch.randn_like(module.weight))
    report = lipschitz_report(model)
    layers = _layers(model)
    assert [layer.name for layer in report.layers] == list(layers)
    for layer in report.layers:
        module = layers[layer.name]
        raw = _dense_norm(module, module.parametrizations.weight.original.detach())
        used = _dense_norm(module, module.weight.detach())  # what an eval-mode forward multiplies by
        assert layer.converged
        assert layer.sigma == pytest.approx(raw, rel=1e-6), layer.name
        assert layer.normalized_sigma == pytest.approx(used, rel=1e-6), layer.name
    assert report.max_layer_sigma == pytest.approx(max(layer.normalized_sigma for layer in report.layers))


def _second_singular_pair_raised_to(module: nn.Linear, factor: float) -> None:
    """Grow the raw weight along its second singular pair to ``factor`` times its norm: the stored
    ``u, v`` (the top pair) do not see it, so the estimate stays where it was."""
    with torch.no_grad():
        weight = module.parametrizations.weight.original
        u, s, vh = torch.linalg.svd(weight)
        weight.add_((factor * s[0] - s[1]) * torch.outer(u[:, 1], vh[1]))


def test_a_stale_estimate_shows_as_a_norm_above_coeff():
    torch.manual_seed(0)
    big = nn.Linear(8, 8)
    with torch.no_grad():
        big.weight.mul_(5.0)  # raw norm above coeff: the layer is rescaled to coeff
    model = nn.Sequential(spectral_norm(big, COEFF), nn.ELU(), spectral_norm(nn.Linear(8, 8), COEFF)).eval()
    update_spectral_norms(model)
    healthy = lipschitz_report(model)
    assert healthy.layers[0].normalized_sigma == pytest.approx(COEFF, rel=1e-4)
    assert not healthy.layers_above_coeff

    _second_singular_pair_raised_to(big, 1.5)
    report = lipschitz_report(model)
    stale = report.layers[0]
    assert stale.estimate == pytest.approx(healthy.layers[0].estimate, rel=1e-5)  # the estimate did not move
    assert stale.normalized_sigma == pytest.approx(1.5 * COEFF, rel=1e-5)
    assert stale.normalized_sigma == pytest.approx(_dense_norm(big, big.weight.detach()), rel=1e-6)
    assert report.max_layer_sigma == pytest.approx(1.5 * COEFF, rel=1e-5)
    assert [layer.name for layer in report.layers_above_coeff] == ["0"]
    assert "0" in str(report) and "stale estimate" in str(report)


def test_scaling_the_whole_raw_weight_is_divided_out():
    """The layer divides by ``<u, A(W) v>``, linear in ``W``: scaling ``W`` by 1.5 scales the
    estimate too, so the used weight keeps its norm, and the report says so."""
    torch.manual_seed(0)
    big = nn.Linear(8, 8)
    with torch.no_grad():
        big.weight.mul_(5.0)
    model = nn.Sequential(spectral_norm(big, COEFF)).eval()
    update_spectral_norms(model)
    before = lipschitz_report(model).layers[0]
    with torch.no_grad():
        big.parametrizations.weight.original.mul_(1.5)
    after = lipschitz_report(model).layers[0]
    assert after.sigma == pytest.approx(1.5 * before.sigma, rel=1e-6)
    assert after.estimate == pytest.approx(1.5 * before.estimate, rel=1e-6)
    assert after.normalized_sigma == pytest.approx(COEFF, rel=1e-4) and not after.above_coeff


def test_a_trained_model_stays_at_or_below_coeff_and_the_report_changes_nothing():
    torch.manual_seed(0)
    model = ToyFlow(n_blocks=3, hidden=16, coeff=COEFF)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(20):  # train mode: one power-iteration step per forward trails the weights
        optimizer.zero_grad()
        (-model.log_prob(torch.randn(64, 2))).mean().backward()
        optimizer.step()
    update_spectral_norms(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    report = lipschitz_report(model)
    assert all(layer.normalized_sigma <= COEFF * (1 + COEFF_SLACK) for layer in report.layers)
    assert report.max_layer_sigma <= COEFF * (1 + COEFF_SLACK) and not report.layers_above_coeff
    assert not report.any_bound_reaches_one
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


class _Module(SimpleNamespace):
    def log(self, name, value):
        self.logged[name] = value


def _audit(model: nn.Module) -> tuple[list[warnings.WarningMessage], dict]:
    trainer = SimpleNamespace(sanity_checking=False, is_global_zero=True, current_epoch=0, global_step=7)
    module = _Module(eval_model=model, logged={})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        InvertibilityAudit().on_validation_epoch_end(trainer, module)
    return [w for w in caught if issubclass(w.category, InvertibilityWarning)], module.logged


def test_the_audit_names_a_layer_above_coeff():
    torch.manual_seed(0)
    big = nn.Linear(8, 8)
    with torch.no_grad():
        big.weight.mul_(5.0)
    branch = nn.Sequential(spectral_norm(big, COEFF), nn.ELU(), spectral_norm(nn.Linear(8, 8), 0.5))
    model = FlowSequential(ResidualBlock(branch, ExactLogDet())).eval()
    update_spectral_norms(model)
    quiet, logged = _audit(model)
    assert not quiet and logged["val/max_branch_bound"] < 1

    # 1.5 x 0.9 x 0.5 < 1: the branch bound alone would not tell; the layer's norm does.
    _second_singular_pair_raised_to(big, 1.5)
    caught, logged = _audit(model)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "layer 'flows.0.net.0' has operator norm 1.3500 > coeff 0.9" in message
    assert "update_spectral_norms" in message
    second = lipschitz_report(model).layers[1].normalized_sigma
    assert logged["val/max_branch_bound"] == pytest.approx(1.5 * COEFF * second, rel=1e-4)
    assert logged["val/max_branch_bound"] < 1
