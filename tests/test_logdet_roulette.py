"""Russian-roulette estimator: weight conventions, unbiasedness, eval behaviour, validation."""

from __future__ import annotations

import math

import pytest
import torch
from test_logdet_nets import exact_logdet_reference, tied_mlp

from iresnet.logdet import PowerSeriesLogDet, RouletteLogDet
from iresnet.logdet.distributions import Geometric, Poisson


def test_tail_probabilities():
    geometric, poisson = Geometric(0.3), Poisson(2.0)
    for k in range(8):
        assert geometric.tail(k) == pytest.approx(0.7**k)
        cdf = sum(math.exp(-2.0) * 2.0**i / math.factorial(i) for i in range(k))
        assert poisson.tail(k) == pytest.approx(1.0 - cdf, rel=1e-12)
    assert poisson.tail(40) > 0.0  # no cancellation to 0 (1 - CDF would underflow)


@pytest.mark.parametrize("dist", [Geometric(0.5), Poisson(2.0)], ids=repr)
def test_draws_follow_the_tail_probabilities(dist):
    torch.manual_seed(0)
    draws = torch.tensor([dist.sample() for _ in range(4000)], dtype=torch.float64)
    for k in range(4):
        assert (draws >= k).double().mean().item() == pytest.approx(dist.tail(k), abs=0.03)


@pytest.mark.parametrize("training, n_exact", [(True, 2), (False, 20)])
def test_weights_are_inverse_tail_probabilities_after_the_exact_terms(training, n_exact, monkeypatch):
    estimator = RouletteLogDet(dist="poisson", lam=2.0, n_exact_terms=2, eval_exact_terms=20)
    monkeypatch.setattr(Poisson, "sample", lambda self: 3)
    coeffs = estimator.coefficients(training)
    tails = [Poisson(2.0).tail(j) for j in (1, 2, 3)]
    assert coeffs == pytest.approx([1.0] * n_exact + [1 / t for t in tails])
    estimator(tied_mlp(3, 0.5), torch.randn(2, 3), training=training)
    assert estimator.last_draw == 3 and estimator.last_n_terms == n_exact + 3


def _errors(estimator, coeff, draws, training=True):
    """Batch-mean error ``logdet - exact`` of ``draws`` independent calls (one draw of N each)."""
    torch.manual_seed(0)
    net, x = tied_mlp(3, coeff), 0.5 * torch.randn(8, 3)
    exact = exact_logdet_reference(net, x).detach()
    with torch.no_grad():
        return torch.stack([(estimator(net, x, training=training)[1] - exact).mean() for _ in range(draws)])


@pytest.mark.parametrize("dist", ["geometric", "poisson"])
def test_roulette_is_unbiased(dist):
    errors = _errors(RouletteLogDet(dist=dist), coeff=0.8, draws=2000)
    standard_error = errors.std() / len(errors) ** 0.5
    assert errors.mean().abs() < 4 * standard_error


def test_two_term_truncation_is_measurably_biased():
    errors = _errors(PowerSeriesLogDet(n_terms=2), coeff=0.98, draws=500)
    standard_error = errors.std() / len(errors) ** 0.5
    assert errors.mean().abs() > 4 * standard_error


def test_eval_mode_uses_many_exact_terms():
    """Eval adds ``eval_exact_terms`` exact terms: accurate even at coeff 0.98 with one draw."""
    errors = _errors(RouletteLogDet(n_probes=256), coeff=0.98, draws=20, training=False)
    training_errors = _errors(RouletteLogDet(n_probes=256), coeff=0.98, draws=20, training=True)
    assert errors.abs().mean() < 0.5 * training_errors.abs().mean()


def test_defaults_match_residual_flows():
    estimator = RouletteLogDet()
    assert estimator.dist == Poisson(2.0) and estimator.n_exact_terms == 2
    assert estimator.grad == "neumann" and estimator.memory_efficient


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(dist="binomial"), "unknown dist 'binomial'"),
        (dict(dist="geometric", p=0.0), r"geometric p must lie in \(0, 1\], got 0.0"),
        (dict(dist="geometric", p=1.5), r"geometric p must lie in \(0, 1\], got 1.5"),
        (dict(dist="poisson", lam=0.0), "poisson lam must be > 0, got 0.0"),
        (dict(n_exact_terms=0), "n_exact_terms must be an integer >= 1"),
        (dict(eval_exact_terms=0), "eval_exact_terms must be an integer >= 1"),
        (dict(grad="exact"), "unknown grad mode 'exact'"),
        (dict(probe="normal"), "unknown probe 'normal'"),
    ],
)
def test_roulette_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RouletteLogDet(**kwargs)
