"""Flow layers: exact log-determinants against dense Jacobians, round trips, and errors."""

import pytest
import torch

from iresnet.flows import ActNorm, FlowSequential, LogitTransform, ResidualBlock, Squeeze
from iresnet.logdet import ExactLogDet, exact_logdet


def brute_logdet(flow, x):
    """log|det| of the dense Jacobian of ``flow`` at each sample (flattened)."""
    out = []
    for xi in x:
        jac = torch.autograd.functional.jacobian(lambda v: flow(v.unsqueeze(0))[0].flatten(), xi)
        out.append(torch.linalg.slogdet(jac.reshape(xi.numel(), xi.numel())).logabsdet)
    return torch.stack(out)


@pytest.fixture
def images():
    torch.manual_seed(0)
    return torch.rand(3, 2, 4, 4, dtype=torch.float64) * 0.98 + 0.01


def test_logit_transform_logdet_and_inverse(images):
    flow = LogitTransform(alpha=0.05)
    y, logdet = flow(images)
    torch.testing.assert_close(logdet, brute_logdet(flow, images))
    torch.testing.assert_close(flow.inverse(y), images)


def test_actnorm_initializes_to_unit_statistics_and_inverts(images):
    flow = ActNorm(2).double()
    y, logdet = flow(images * 3 + 1)
    torch.testing.assert_close(y.mean(dim=(0, 2, 3)), torch.zeros(2, dtype=torch.float64), atol=1e-8, rtol=0)
    torch.testing.assert_close(y.std(dim=(0, 2, 3), unbiased=False), torch.ones(2, dtype=torch.float64), atol=1e-4, rtol=0)
    torch.testing.assert_close(logdet, brute_logdet(flow, images * 3 + 1))
    torch.testing.assert_close(flow.inverse(y), images * 3 + 1)
    # The initialization is a buffer: it survives a state_dict round trip.
    fresh = ActNorm(2).double()
    fresh.load_state_dict(flow.state_dict())
    assert bool(fresh.initialized)


def test_actnorm_inverse_before_init_is_a_clear_error():
    with pytest.raises(RuntimeError, match="before initialization"):
        ActNorm(3).inverse(torch.zeros(2, 3))


def test_squeeze_is_a_permutation(images):
    flow = Squeeze(2)
    y, logdet = flow(images)
    assert y.shape == (3, 8, 2, 2)
    assert torch.equal(logdet, torch.zeros(3, dtype=torch.float64))
    assert torch.equal(flow.inverse(y), images)
    assert torch.equal(y.flatten(1).sort().values, images.flatten(1).sort().values)
    with pytest.raises(ValueError, match="divisible"):
        flow(torch.zeros(1, 1, 3, 4))


def test_flow_sequential_sums_logdets_and_inverts_in_reverse(images):
    flow = FlowSequential(LogitTransform(0.05), ActNorm(2), Squeeze()).double()
    flow(images)  # initializes ActNorm
    y, logdet = flow(images)
    torch.testing.assert_close(logdet, brute_logdet(flow, images))
    torch.testing.assert_close(flow.inverse(y), images)


def contractive_mlp(dim: int, coeff: float) -> torch.nn.Module:
    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Linear(dim, 16), torch.nn.ELU(), torch.nn.Linear(16, dim)).double()
    with torch.no_grad():
        for layer in (net[0], net[2]):
            layer.weight /= torch.linalg.matrix_norm(layer.weight, ord=2) / coeff**0.5
    return net


def test_residual_block_exact_logdet_and_round_trip():
    x = torch.randn(5, 4, dtype=torch.float64)
    block = ResidualBlock(contractive_mlp(4, 0.9), logdet=ExactLogDet())
    y, logdet = block(x)
    assert logdet.shape == (5,)
    torch.testing.assert_close(logdet, exact_logdet(lambda v: v + block.net(v), x))
    assert (block.inverse(y) - x).abs().max() < 1e-5
    assert block.last_inverse_stats.converged


def test_flow_model_rejects_nan_input_at_its_door():
    """The model checks its input once; its blocks have no data-dependent branch."""
    from iresnet.models import FlowModel, StandardNormal

    model = FlowModel(FlowSequential(ResidualBlock(contractive_mlp(4, 0.9), logdet=ExactLogDet())), StandardNormal(4))
    x = torch.randn(2, 4)
    x[1, 2] = float("nan")
    with pytest.raises(ValueError, match="FlowModel.forward received 1 non-finite"):
        model.log_prob(x)
    with pytest.raises(ValueError, match="FlowModel.inverse received 1 non-finite"):
        model.inverse(x)
