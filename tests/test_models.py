"""Density models: the multi-scale flow and the toy flow, against brute force."""


import pytest
import torch

from iresnet.inverse import FixedPointInverse
from iresnet.lipschitz import update_spectral_norms
from iresnet.logdet import ExactLogDet, RouletteLogDet
from iresnet.models import DiagonalGaussian, ResidualFlow, StandardNormal, ToyFlow
from iresnet.metrics import mean_and_standard_error


def tiny_flow(**kw) -> ResidualFlow:
    torch.manual_seed(0)
    args = dict(input_shape=(1, 8, 8), n_blocks=[1, 1], hidden_channels=4, fc_blocks=1, fc_hidden=8,
                logdet=ExactLogDet(), inverse=FixedPointInverse(atol=1e-10, rtol=0, max_iter=500), alpha=0.05)
    args.update(kw)
    model = ResidualFlow(**args).double()
    model(torch.rand(16, *args["input_shape"], dtype=torch.float64))  # initializes ActNorm
    update_spectral_norms(model)
    return model.eval()


@pytest.mark.parametrize("kw", [{}, {"factor_out": True}, {"init_squeeze": True, "n_blocks": [1, 1]}, {"fc_blocks": 0}])
def test_residual_flow_logdet_matches_dense_jacobian_and_inverts(kw):
    model = tiny_flow(**kw)
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64) * 0.9 + 0.05
    z, logdet = model(x)
    assert z.shape == (2, 64) and logdet.shape == (2,)
    for i in range(2):
        jac = torch.autograd.functional.jacobian(lambda v: model(v.view(1, 1, 8, 8))[0].flatten(), x[i].flatten())
        torch.testing.assert_close(logdet[i], torch.linalg.slogdet(jac).logabsdet, rtol=1e-6, atol=1e-6)
    assert (model.inverse(z) - x).abs().max() < 1e-5


def test_log_prob_adds_prior_and_sample_has_image_shape():
    model = tiny_flow(prior=DiagonalGaussian)
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64)
    z, logdet = model(x)
    torch.testing.assert_close(model.log_prob(x), model.prior().log_prob(z) + logdet)
    samples = model.sample(5, temperature=0.7, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (5, 1, 8, 8) and torch.isfinite(samples).all()
    again = model.sample(5, temperature=0.7, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(samples, again)  # the generator makes draws reproducible


def test_priors_match_torch_distributions():
    z = torch.randn(4, 3)
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(1)
    torch.testing.assert_close(StandardNormal(3)().log_prob(z), expected)
    prior = DiagonalGaussian(3)
    with torch.no_grad():
        prior.mean.copy_(torch.tensor([0.5, -1.0, 2.0]))
        prior.log_std.copy_(torch.tensor([0.1, -0.3, 0.7]))
    expected = torch.distributions.Normal(prior.mean, prior.log_std.exp()).log_prob(z).sum(1)
    torch.testing.assert_close(prior().log_prob(z), expected)
    assert prior().sample((1000,)).std(0).div(prior.log_std.exp()).sub(1).abs().max() < 0.1


@pytest.mark.parametrize(
    "x, match",
    [
        (torch.rand(2, 1, 7, 8), "shape"),
        (torch.full((2, 1, 8, 8), float("nan")), "NaN"),
        (torch.full((2, 1, 8, 8), 3.0), r"\[0, 1\]"),
    ],
)
def test_bad_images_raise_clear_errors(x, match):
    with pytest.raises(ValueError, match=match):
        tiny_flow()(x.double())


def test_odd_sizes_cannot_be_squeezed():
    with pytest.raises(ValueError, match="even"):
        ResidualFlow(input_shape=(1, 7, 7), n_blocks=[1, 1])


def test_toy_flow_exact_and_roulette_evaluations_agree_within_standard_error():
    torch.manual_seed(0)
    model = ToyFlow(n_blocks=3, hidden=32, hidden_layers=2, coeff=0.9)
    x = torch.randn(400, 2)
    with torch.no_grad():
        exact = model.log_prob(x)
        model.set_logdet_estimator(RouletteLogDet(eval_exact_terms=2, n_probes=1))
        model.eval()
        draws = torch.stack([model.log_prob(x) for _ in range(30)])
    # One roulette draw is shared by the batch, so the draws (not the points) are independent.
    mean, se = mean_and_standard_error((draws - exact).mean(1))
    assert abs(mean) < 4 * se
    assert se < 0.05


def test_toy_flow_inverts_and_rejects_wrong_shape():
    torch.manual_seed(0)
    model = ToyFlow(n_blocks=2, hidden=16, hidden_layers=1).eval()
    x = torch.randn(8, 2)
    z, _ = model(x)
    assert (model.inverse(z) - x).abs().max() < 1e-4
    with pytest.raises(ValueError, match=r"\(B, 2\)"):
        model(torch.randn(8, 3))


def test_reconstruct_keeps_float64_iterates_for_a_float32_model():
    torch.manual_seed(0)
    model = ResidualFlow(input_shape=(1, 8, 8), n_blocks=[1, 1], hidden_channels=8, fc_blocks=1, fc_hidden=8,
                         inverse=FixedPointInverse(atol=1e-9, rtol=0, max_iter=500))
    x = torch.rand(4, 1, 8, 8) * 0.9 + 0.05
    model(x)  # initializes ActNorm
    update_spectral_norms(model)
    model.eval()
    reconstruction = model.reconstruct(x)
    assert reconstruction.dtype == torch.float32
    assert (reconstruction - x).abs().max() < 1e-6
    assert all(b.last_inverse_stats.converged for b in model.residual_blocks())


def test_code_defaults_equal_the_config_defaults(compose_config):
    """What ResidualFlow builds without arguments is what model=resflow builds (layout options)."""
    import inspect

    from iresnet.lipschitz import LipSwish

    cfg = compose_config("train", ["model=resflow"]).model
    defaults = inspect.signature(ResidualFlow).parameters
    for key in ("init_squeeze", "factor_out", "first_preact", "preact", "actnorm", "coeff", "kernels", "alpha"):
        assert cfg[key] == defaults[key].default, key
    cfg = compose_config("train", ["model=resflow_small"]).model
    cfg.input_shape = [1, 28, 28]
    from hydra.utils import instantiate

    model = instantiate(cfg)
    first, second = model.residual_blocks()[:2]
    # The first branch starts with its conv (as Residual Flows does), the others with LipSwish.
    assert not isinstance(first.net[0], LipSwish) and isinstance(second.net[0], LipSwish)


def test_reconstruct_and_the_inversion_benchmark_encode_without_tf32(monkeypatch):
    """On GPUs torch runs convolutions in TF32 by default; a code computed that way differs by
    ~1e-4 from the function the (full-precision) inverse inverts."""
    from iresnet.bench.inversion import encode

    torch.manual_seed(0)
    model = ResidualFlow(input_shape=(1, 8, 8), n_blocks=[1, 1], hidden_channels=8, fc_blocks=1, fc_hidden=8)
    x = torch.rand(2, 1, 8, 8) * 0.9 + 0.05
    model(x)  # initializes ActNorm
    model.eval()
    seen = []
    forward = ResidualFlow.forward
    monkeypatch.setattr(
        ResidualFlow, "forward",
        lambda self, x, context=None: seen.append(torch.backends.cudnn.allow_tf32) or forward(self, x, context),
    )  # fmt: skip
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    model.reconstruct(x)
    encode(model, x)
    assert seen == [False, False] and torch.backends.cudnn.allow_tf32
