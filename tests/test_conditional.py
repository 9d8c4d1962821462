"""Conditional flows against brute force: a conditional ToyFlow trained a few steps, so that its
contexts differ, checked for its log-density, normalization, inverse and Lipschitz bound per context."""

import math

import pytest
import torch
from torch import nn

from iresnet.data import Toy2dDataModule
from iresnet.flows import FlowSequential, ResidualBlock
from iresnet.inverse import AndersonInverse, FixedPointInverse
from iresnet.lipschitz import ConditionalSequential, ContextShift, lipschitz_report, spectral_norm, update_spectral_norms
from iresnet.logdet import ExactLogDet, PowerSeriesLogDet, RouletteLogDet
from iresnet.models import ToyFlow
from iresnet.models.blocks import conv_branch, label_embedding

COEFF = 0.9
CONTEXTS = torch.eye(2, dtype=torch.float64)  # which moon


@pytest.fixture(scope="module")
def toy() -> ToyFlow:
    torch.manual_seed(0)
    model = ToyFlow(
        n_blocks=4, hidden=32, hidden_layers=2, coeff=COEFF, context_features=2,
        inverse=FixedPointInverse(atol=1e-10, rtol=0, max_iter=2000),
    ).double()  # fmt: skip
    data = Toy2dDataModule(name="moons", num_train=1024, batch_size=128, context=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    model.train()
    for _ in range(3):
        for x, c in data.train_dataloader():
            optimizer.zero_grad()
            (-model.log_prob(x.double(), c.double()).mean()).backward()
            optimizer.step()
    update_spectral_norms(model)
    return model.eval()


def _grid(lim: float = 7.0, n: int = 281) -> tuple[torch.Tensor, float]:
    axis = torch.linspace(-lim, lim, n, dtype=torch.float64)
    xx, yy = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([xx.flatten(), yy.flatten()], 1), float(axis[1] - axis[0]) ** 2


def test_training_made_the_contexts_differ(toy):
    points = torch.tensor([[-1.0, 0.5], [1.5, -0.8]], dtype=torch.float64)  # on the outer and the inner moon
    with torch.no_grad():
        log_p = torch.stack([toy.log_prob(points, c.expand(2, 2)) for c in CONTEXTS])
    assert log_p[0, 0] > log_p[1, 0] + 1 and log_p[1, 1] > log_p[0, 1] + 1


def test_log_prob_is_prior_plus_slogdet_of_the_dense_jacobian_at_fixed_context(toy):
    x = torch.randn(4, 2, dtype=torch.float64)
    for c in CONTEXTS:
        context = c.expand(4, 2)
        with torch.no_grad():
            z, _ = toy(x, context)
            log_p = toy.log_prob(x, context)
        for i in range(4):
            jac = torch.autograd.functional.jacobian(lambda v: toy(v.unsqueeze(0), c.unsqueeze(0))[0][0], x[i])
            expected = toy.prior(c.unsqueeze(0)).log_prob(z[i : i + 1])[0] + torch.linalg.slogdet(jac).logabsdet
            torch.testing.assert_close(log_p[i], expected, rtol=1e-9, atol=1e-9)


def test_each_conditional_density_integrates_to_one(toy):
    grid, cell = _grid()
    for c in CONTEXTS:
        with torch.no_grad():
            log_p = torch.cat([toy.log_prob(part, c.expand(len(part), 2)) for part in grid.split(20_000)])
        assert log_p.exp().sum() * cell == pytest.approx(1.0, abs=0.01)


def test_inverse_round_trips_for_every_context(toy):
    torch.manual_seed(1)
    x = 2 * torch.randn(64, 2, dtype=torch.float64)
    for c in CONTEXTS:
        context = c.expand(64, 2)
        with torch.no_grad():
            z, _ = toy(x, context)
            for solver in (FixedPointInverse(atol=1e-10, rtol=0, max_iter=2000), AndersonInverse(atol=1e-10, rtol=0)):
                toy.set_inverse_solver(solver)
                assert (toy.inverse(z, context) - x).abs().max() < 1e-5
    mixed = CONTEXTS[torch.arange(64) % 2]  # a context per row, kept with its row as samples converge
    with torch.no_grad():
        assert (toy.reconstruct(x, mixed) - x).abs().max() < 1e-5


def test_random_pair_ratios_stay_below_coeff_at_fixed_context(toy):
    torch.manual_seed(2)
    report = lipschitz_report(toy)
    assert report.branches and all(branch.bound <= COEFF ** 3 + 1e-9 for branch in report.branches)
    for block in toy.residual_blocks():
        for c in CONTEXTS:
            x1 = 3 * torch.randn(2000, 2, dtype=torch.float64)
            x2 = x1 + torch.randn(2000, 2, dtype=torch.float64) * torch.logspace(-4, 0, 2000, dtype=torch.float64)[:, None]
            context = c.expand(2000, 2)
            with torch.no_grad():
                ratio = (block.net(x1, context) - block.net(x2, context)).norm(dim=1) / (x1 - x2).norm(dim=1)
            assert ratio.max() <= COEFF ** 3 + 1e-9  # three normalized layers, each <= coeff


def test_report_ignores_the_unconstrained_context_network():
    """The context MLP's plain Linear layers are not on the path of x: no 'unnormalized' layers."""
    torch.manual_seed(0)
    model = ToyFlow(n_blocks=1, hidden=8, hidden_layers=1, context_features=3)
    update_spectral_norms(model)
    (branch,) = lipschitz_report(model).branches
    assert branch.unnormalized == () and len(branch.layers) == 2 and branch.bound < 0.9**2 + 1e-6


def _conditional_conv_block(logdet):
    torch.manual_seed(0)
    net = conv_branch(2, 8, (4, 4), "3-1-3", "lipswish", 0.9, context=label_embedding(3))
    for shift in (m for m in net.modules() if isinstance(m, ContextShift)):
        nn.init.normal_(shift.context_net.weight)  # contexts that matter
    update_spectral_norms(net)
    return ResidualBlock(net.double(), logdet=logdet).eval()  # eval: no power-iteration step per call


def test_conditional_conv_branch_logdet_matches_dense_jacobian():
    block = _conditional_conv_block(ExactLogDet())
    x = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    labels = torch.tensor([0, 2, 1])
    with torch.no_grad():
        _, logdet = block(x, labels)
    for i in range(3):
        jac = torch.autograd.functional.jacobian(lambda v: block(v[None], labels[i : i + 1])[0].flatten(), x[i])
        torch.testing.assert_close(logdet[i], torch.linalg.slogdet(jac.reshape(32, 32)).logabsdet)


@pytest.mark.parametrize("grad", ["backprop", "neumann"])
def test_memory_efficient_gradient_with_a_context_equals_the_graph_one(grad):
    """Same probes and terms: the memory-efficient path gives the gradient of the in-graph one,
    for the weights, the input and a context that requires grad."""
    torch.manual_seed(0)
    net = ConditionalSequential(
        spectral_norm(nn.Linear(3, 16), 0.9), ContextShift(nn.Linear(4, 16)), nn.Tanh(),
        spectral_norm(nn.Linear(16, 3), 0.9),
    ).double().eval()  # fmt: skip
    x, context = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    grads = []
    for memory_efficient in (False, True):
        estimator = PowerSeriesLogDet(n_terms=4, grad=grad, memory_efficient=memory_efficient, chunk_size=2)
        x_in, c_in = x.clone().requires_grad_(True), context.clone().requires_grad_(True)
        torch.manual_seed(1)
        g, logdet = estimator(net, x_in, training=True, context=c_in)
        weights = torch.arange(1.0, 6.0, dtype=torch.float64)  # per-sample weights are kept exactly
        grads.append(torch.autograd.grad((weights * logdet).sum() + g.sum(), [*net.parameters(), x_in, c_in]))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def test_roulette_with_a_context_is_unbiased_against_the_exact_logdet():
    block = _conditional_conv_block(RouletteLogDet(eval_exact_terms=2))
    block.eval()
    x, labels = 0.5 * torch.randn(4, 2, 4, 4, dtype=torch.float64), torch.tensor([0, 1, 2, 0])
    with torch.no_grad():
        exact = ExactLogDet()(block.net, x, training=False, context=labels)[1]
        torch.manual_seed(3)
        draws = torch.stack([block(x, labels)[1] for _ in range(400)])
    z = (draws.mean(0) - exact) / (draws.std(0) / math.sqrt(len(draws)))
    assert z.abs().max() < 4


def test_a_conditional_branch_without_a_context_says_what_to_pass():
    block = _conditional_conv_block(ExactLogDet())
    with pytest.raises(ValueError, match="needs a context"):
        block(torch.randn(2, 2, 4, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="3 rows for a batch of 2"):
        block(torch.randn(2, 2, 4, 4, dtype=torch.float64), torch.tensor([0, 1, 2]))


def test_flow_sequential_passes_the_context_on_and_unconditional_blocks_ignore_it():
    block = _conditional_conv_block(ExactLogDet())
    plain = ResidualBlock(conv_branch(2, 8, (4, 4), "3-1-3", "lipswish", 0.9).double(), logdet=ExactLogDet()).eval()
    flow = FlowSequential(block, plain)
    x, labels = torch.randn(2, 2, 4, 4, dtype=torch.float64), torch.tensor([1, 2])
    with torch.no_grad():
        y, logdet = flow(x, labels)
        y1, ld1 = block(x, labels)
        y2, ld2 = plain(y1)
        torch.testing.assert_close(y, y2)
        torch.testing.assert_close(logdet, ld1 + ld2)
        torch.testing.assert_close(flow.inverse(y, labels), x, atol=1e-5, rtol=0)
    assert block.conditional and not plain.conditional
