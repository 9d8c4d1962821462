"""FlowModel(flow, prior) with any prior, the presets built from it, hybrid models and i-DenseNet
branches, against brute force."""

import math

import pytest
import torch
from torch.distributions import Independent, MixtureSameFamily, MultivariateNormal, Normal, Categorical

import iresnet
from iresnet.flows import FlowSequential, ResidualBlock
from iresnet.inverse import FixedPointInverse
from iresnet.lipschitz import LipschitzDenseLayer, lipschitz_report, update_spectral_norms
from iresnet.logdet import ExactLogDet
from iresnet.models import ClassConditionalGaussian, FlowModel, ResidualFlow, ToyFlow
from iresnet.models.blocks import dense_conv_branch, dense_fc_branch, fc_branch
from iresnet.training import FlowLightningModule


def _standard_normal(d: int) -> Independent:
    return Independent(Normal(torch.zeros(d), torch.ones(d)), 1)


def test_build_your_own_flow_from_library_parts():
    """The docs' example: a model from library parts in a few lines."""
    torch.manual_seed(0)
    blocks = [ResidualBlock(fc_branch(2, 32, 1, coeff=0.9), logdet=ExactLogDet()) for _ in range(3)]
    model = FlowModel(FlowSequential(*blocks), _standard_normal(2))
    x = torch.randn(16, 2)
    loss = -model.log_prob(x).mean()
    loss.backward()
    assert model.log_prob(x).shape == (16,) and model.sample(5).shape == (5, 2)
    assert not model.conditional and torch.isfinite(loss)


def test_flow_model_with_a_distributions_prior_equals_the_preset_it_replaces():
    torch.manual_seed(0)
    toy = ToyFlow(n_blocks=3, hidden=16, hidden_layers=1).double().eval()
    x = torch.randn(8, 2, dtype=torch.float64)
    built = FlowModel(toy.flow, _standard_normal(2)).double()
    torch.testing.assert_close(built.log_prob(x), toy.log_prob(x))
    image = ResidualFlow(input_shape=(1, 8, 8), n_blocks=[1, 1], hidden_channels=4, fc_blocks=1, fc_hidden=8,
                         logdet=ExactLogDet()).double()  # fmt: skip
    images = torch.rand(2, 1, 8, 8, dtype=torch.float64) * 0.9 + 0.05
    image(images)  # ActNorm's initialization
    image.eval()
    torch.testing.assert_close(FlowModel(image.flow, _standard_normal(64)).double().log_prob(images), image.log_prob(images))


def test_a_distributions_prior_moves_with_the_model_and_is_saved():
    torch.manual_seed(0)
    mixture = MixtureSameFamily(
        Categorical(logits=torch.tensor([0.2, -0.1])),
        Independent(Normal(torch.randn(2, 3), torch.rand(2, 3) + 0.5), 1),
    )
    for prior in (mixture, MultivariateNormal(torch.zeros(3), torch.eye(3) * 2)):
        model = FlowModel(FlowSequential(), prior)
        z = torch.randn(5, 3, dtype=torch.float64)
        expected = prior.log_prob(z.float()).double()
        model = model.double()
        assert all(t.dtype == torch.float64 for t in model.prior.buffers())
        torch.testing.assert_close(model.log_prob(z), expected, rtol=1e-5, atol=1e-5)
        state = model.state_dict()
        assert state and all(key.startswith("prior.") for key in state)
        fresh = FlowModel(FlowSequential(), prior).double()
        for buffer in fresh.prior.buffers():
            buffer.zero_()
        fresh.load_state_dict(state)
        torch.testing.assert_close(fresh.log_prob(z), model.log_prob(z))


def test_prior_event_shape_must_be_one_code():
    model = FlowModel(FlowSequential(), Normal(torch.zeros(3), torch.ones(3)))  # batch shape (3,), event ()
    with pytest.raises(ValueError, match="event shape must be one code.*Independent"):
        model.log_prob(torch.randn(4, 3))


def test_sampling_with_a_context_draws_one_sample_per_row():
    torch.manual_seed(0)
    prior = ClassConditionalGaussian(2, num_classes=3)
    with torch.no_grad():
        prior.mean.weight.copy_(torch.tensor([[-5.0, 0.0], [0.0, 0.0], [5.0, 0.0]]))
        prior.log_std.weight.fill_(-3.0)
    model = FlowModel(FlowSequential(), prior)
    labels = torch.tensor([0, 2, 2, 1])
    samples = model.sample(4, labels, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(samples[:, 0], torch.tensor([-5.0, 5.0, 5.0, 0.0]), atol=0.3, rtol=0)
    cooled = model.sample(4, labels, temperature=0.01)
    torch.testing.assert_close(cooled[:, 0], torch.tensor([-5.0, 5.0, 5.0, 0.0]), atol=0.01, rtol=0)
    assert model.conditional
    with pytest.raises(ValueError, match="n must equal"):
        model.sample(3, labels)
    with pytest.raises(ValueError, match=r"lie in \[0, 2\]"):
        model.log_prob(torch.zeros(2, 2), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="pass the labels as the context"):
        model.log_prob(torch.zeros(2, 2))


def _tiny_hybrid(task: str = "hybrid", hybrid_lambda=None) -> ResidualFlow:
    torch.manual_seed(0)
    model = ResidualFlow(
        input_shape=(1, 4, 4), n_blocks=[1, 1], hidden_channels=4, fc_blocks=1, fc_hidden=8, logdet=ExactLogDet(),
        num_classes=3, task=task, hybrid_lambda=hybrid_lambda, classifier_hidden=8, alpha=0.05,
    ).double()  # fmt: skip
    model(torch.rand(8, 1, 4, 4, dtype=torch.float64))  # ActNorm's initialization
    update_spectral_norms(model)
    return model.eval()  # eval: the spectral norms read their vectors without updating them


@pytest.mark.parametrize("task, hybrid_lambda", [("hybrid", None), ("hybrid", 1.0), ("classification", None)])
def test_hybrid_loss_gradient_matches_finite_differences(task, hybrid_lambda):
    model = _tiny_hybrid(task, hybrid_lambda)
    module = FlowLightningModule(model={"_target_": "torch.nn.Identity"}, n_bits=8)  # only its loss is used
    module.hybrid = True
    x, y = torch.rand(4, 1, 4, 4, dtype=torch.float64) * 0.9 + 0.05, torch.tensor([0, 1, 2, 1])

    def loss() -> torch.Tensor:
        return module.per_sample_loss(model, (x, y))["loss"].mean()

    params = [
        ("classifier", model.classifier.logits.weight),
        ("first conv", model.residual_blocks()[0].net[0].parametrizations.weight.original),
        ("fc", model.residual_blocks()[-1].net[1].parametrizations.weight.original),
    ]
    grads = torch.autograd.grad(loss(), [p for _, p in params], allow_unused=True)  # a classifier ignores fc
    for (name, p), grad in zip(params, grads):
        grad = torch.zeros_like(p) if grad is None else grad
        index = tuple(torch.randint(s, ()) for s in p.shape)
        with torch.no_grad():
            original = p[index].item()
            p[index] = original + 1e-6
            up = loss().item()
            p[index] = original - 1e-6
            down = loss().item()
            p[index] = original
        assert grad[index].item() == pytest.approx((up - down) / 2e-6, rel=1e-4, abs=1e-8), name


def test_hybrid_objective_weighs_the_density_by_lambda():
    model = _tiny_hybrid("hybrid", None)
    x, y = torch.rand(3, 1, 4, 4, dtype=torch.float64) * 0.9 + 0.05, torch.tensor([2, 0, 1])
    terms = model.hybrid_objective(x, y)
    torch.testing.assert_close(terms.log_prob, model.log_prob(x))
    expected_ce = torch.nn.functional.cross_entropy(terms.logits, y, reduction="none")
    torch.testing.assert_close(terms.objective, expected_ce - terms.log_prob / 16)  # lambda = 1 / D
    assert not model.conditional  # the flow models p(x); the labels go to the classifier
    with pytest.raises(ValueError, match="needs num_classes"):
        ResidualFlow(input_shape=(1, 4, 4), n_blocks=[1], task="hybrid")


def _dense_branch(kind: str):
    torch.manual_seed(0)
    if kind == "conv":
        net = dense_conv_branch(2, 8, 3, (4, 4), "clipswish", coeff=0.9).double()
        shape = (2, 4, 4)
    else:
        net = dense_fc_branch(6, 8, 3, "clipswish", coeff=0.9).double()
        shape = (6,)
    with torch.no_grad():  # learned concatenation weights away from their (equal) start
        for layer in (m for m in net.modules() if isinstance(m, LipschitzDenseLayer)):
            layer.raw_eta.copy_(torch.randn(2))
    update_spectral_norms(net)
    return net.eval(), shape


@pytest.mark.parametrize("kind", ["conv", "fc"])
def test_dense_branch_is_lipschitz_below_its_bound_on_random_pairs(kind):
    net, shape = _dense_branch(kind)
    bound = lipschitz_report(ResidualBlock(net)).branches[0].bound
    assert bound <= 0.9**4 + 1e-9  # three dense layers and the last linear map, each <= coeff
    torch.manual_seed(1)
    x1 = torch.randn(3000, *shape, dtype=torch.float64)
    step = torch.logspace(-4, 0, 3000, dtype=torch.float64).view(-1, *[1] * len(shape))
    x2 = x1 + step * torch.randn_like(x1)
    with torch.no_grad():
        ratio = (net(x1) - net(x2)).flatten(1).norm(dim=1) / (x1 - x2).flatten(1).norm(dim=1)
    assert ratio.max() <= bound + 1e-9


def test_dense_layer_bound_is_its_formula_and_its_weights_are_normalized():
    net, _ = _dense_branch("conv")
    layer = next(m for m in net.modules() if isinstance(m, LipschitzDenseLayer))
    eta = layer.eta()
    torch.testing.assert_close(eta.norm(), torch.tensor(0.9, dtype=eta.dtype))
    sigma = lipschitz_report(layer.network).layers[0].normalized_sigma
    assert layer.lipschitz_bound(lambda m: sigma) == pytest.approx(math.sqrt(eta[0] ** 2 + eta[1] ** 2 * sigma**2))


def test_densenet_residual_flow_logdet_matches_the_dense_jacobian_and_inverts():
    torch.manual_seed(0)
    model = ResidualFlow(
        input_shape=(1, 4, 4), n_blocks=[1, 1], branch="densenet", dense_depth=2, dense_growth=8,
        activation=iresnet.CLipSwish, fc_blocks=1, fc_hidden=8, logdet=ExactLogDet(), alpha=0.05,
        inverse=FixedPointInverse(atol=1e-10, rtol=0, max_iter=1000),
    ).double()  # fmt: skip
    x = torch.rand(3, 1, 4, 4, dtype=torch.float64) * 0.9 + 0.05
    model(x)
    update_spectral_norms(model)
    model.eval()
    with torch.no_grad():
        z, logdet = model(x)
    for i in range(3):
        jac = torch.autograd.functional.jacobian(lambda v: model(v.view(1, 1, 4, 4))[0].flatten(), x[i].flatten())
        torch.testing.assert_close(logdet[i], torch.linalg.slogdet(jac).logabsdet)
    assert (model.inverse(z) - x).abs().max() < 1e-6
    assert not lipschitz_report(model).any_bound_reaches_one


def test_each_block_keeps_its_own_estimator_statistics():
    """One estimator object shared by every block; each block records its own draw."""
    torch.manual_seed(0)
    model = ResidualFlow(input_shape=(1, 8, 8), n_blocks=[1, 1], hidden_channels=4, fc_blocks=1, fc_hidden=8,
                         logdet=iresnet.RouletteLogDet())  # fmt: skip
    model.train()
    model(torch.rand(4, 1, 8, 8))
    blocks = model.residual_blocks()
    assert len({id(b.logdet) for b in blocks}) == 1  # shared
    terms = [b.last_n_terms for b in blocks]
    assert all(t is not None and t >= 2 for t in terms) and all(b.last_logdet.shape == (4,) for b in blocks)
    # the shared estimator only remembers the last block's draw; the first block kept its own
    assert terms[0] != blocks[0].logdet.last_n_terms
