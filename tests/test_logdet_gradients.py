"""Gradients of the series estimators: backprop, Neumann, memory-efficient, and the value/gradient split."""

from __future__ import annotations

import pytest
import torch
from test_logdet_nets import (
    dense_jacobians,
    exact_logdet_reference,
    series_from_jacobians,
    tied_mlp,
    use_exact_traces,
)

from iresnet.logdet import PowerSeriesLogDet, RouletteLogDet, sample_probe
from iresnet.logdet.series import series_logdet

MODES = [(grad, mem) for grad in ("backprop", "neumann") for mem in (False, True)]


def _grads(estimator, net, x, weights=None):
    """Gradients of ``sum_b w_b logdet_b`` (mean by default) w.r.t. the parameters and ``x``."""
    x = x.clone().requires_grad_(True)
    _, logdet = estimator(net, x, training=True)
    weights = torch.full_like(logdet, 1 / len(logdet)) if weights is None else weights
    return torch.autograd.grad((weights * logdet).sum(), [*net.parameters(), x])


def _reference_grads(net, x, logdet_fn):
    x = x.clone().requires_grad_(True)
    return torch.autograd.grad(logdet_fn(net, x).mean(), [*net.parameters(), x])


def _assert_all_close(got, want, **tol):
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **tol)


@pytest.mark.parametrize("grad, memory_efficient", MODES)
def test_gradient_equals_gradient_of_truncated_trace_series(grad, memory_efficient, monkeypatch):
    """With exact traces every mode gives the exact gradient of the truncated series
    (Neumann: ``d tr(J^k)/k = tr(J^(k-1) dJ)``)."""
    use_exact_traces(monkeypatch)
    net, x = tied_mlp(3, 0.8), 0.5 * torch.randn(5, 3)
    estimator = PowerSeriesLogDet(n_terms=6, grad=grad, memory_efficient=memory_efficient)

    def truncated(net, x):
        return series_from_jacobians(dense_jacobians(net, x, create_graph=True), [1.0] * 6)

    _assert_all_close(_grads(estimator, net, x), _reference_grads(net, x, truncated), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("grad, memory_efficient", MODES)
def test_gradient_with_many_terms_equals_exact_logdet_gradient(grad, memory_efficient, monkeypatch):
    use_exact_traces(monkeypatch)
    net, x = tied_mlp(3, 0.7), 0.5 * torch.randn(5, 3)
    estimator = PowerSeriesLogDet(n_terms=60, grad=grad, memory_efficient=memory_efficient)
    _assert_all_close(
        _grads(estimator, net, x), _reference_grads(net, x, exact_logdet_reference), atol=1e-5, rtol=1e-4
    )


def _gradient_z_scores(estimator, draws: int = 400):
    """``(mean - exact) / SE`` per gradient component (parameters and ``x``) over ``draws`` calls."""
    torch.manual_seed(0)
    net, x = tied_mlp(3, 0.6), 0.5 * torch.randn(8, 3)
    exact = torch.cat([g.flatten() for g in _reference_grads(net, x, exact_logdet_reference)])
    samples = torch.stack([torch.cat([g.flatten() for g in _grads(estimator, net, x)]) for _ in range(draws)])
    return (samples.mean(0) - exact) / (samples.std(0) / draws**0.5)


@pytest.mark.parametrize(
    "estimator",
    [
        RouletteLogDet(),
        RouletteLogDet(dist="geometric", grad="backprop", memory_efficient=False),
        PowerSeriesLogDet(n_terms=25, grad="neumann", memory_efficient=True),
    ],
    ids=repr,
)
def test_stochastic_gradients_are_unbiased(estimator):
    """Averaged over draws (probes and roulette), the gradient matches the exact one within 4 SE."""
    z = _gradient_z_scores(estimator)
    assert z.abs().max() < 4, z


def test_gradient_check_detects_truncation_bias():
    """The check above has power: the 2-term series' gradient is many SE off."""
    assert _gradient_z_scores(PowerSeriesLogDet(n_terms=2, grad="neumann")).abs().max() > 8


@pytest.mark.parametrize("memory_efficient", [False, True])
def test_neumann_reports_the_estimate_and_differentiates_the_surrogate(memory_efficient):
    net, x = tied_mlp(3, 0.8), torch.randn(6, 3)
    neumann = PowerSeriesLogDet(n_terms=5, grad="neumann", memory_efficient=memory_efficient)
    torch.manual_seed(3)
    _, reported = neumann(net, x, training=True)
    torch.manual_seed(3)
    _, backprop = PowerSeriesLogDet(n_terms=5, grad="backprop")(net, x, training=True)
    torch.testing.assert_close(reported.detach(), backprop.detach())

    torch.manual_seed(3)
    probes = sample_probe(x, "gaussian", 1)
    x_in = x.clone().requires_grad_(True)
    value, surrogate = series_logdet(net(x_in), x_in, probes, [1.0] * 5, "neumann")
    torch.testing.assert_close(reported.detach(), value)
    assert (reported.detach() - surrogate.detach()).abs().min() > 1e-3
    params = list(net.parameters())
    got = torch.autograd.grad(reported.sum(), params)
    want = torch.autograd.grad(surrogate.sum(), params)
    _assert_all_close(got, want, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("grad", ["backprop", "neumann"])
def test_memory_efficient_matches_plain_autograd(grad):
    """Same draw, same gradients: for logdet (mean and sum) and for a loss through g(x) too."""
    net, x = tied_mlp(3, 0.9), torch.randn(6, 3)
    for weights in (None, torch.ones(6)):
        grads = []
        for memory_efficient in (False, True):
            torch.manual_seed(5)
            estimator = PowerSeriesLogDet(n_terms=4, n_probes=2, grad=grad, memory_efficient=memory_efficient)
            grads.append(_grads(estimator, net, x, weights))
        _assert_all_close(*grads, atol=1e-6, rtol=1e-5)

    x_in = x.clone().requires_grad_(True)
    g_x, logdet = PowerSeriesLogDet(grad=grad, memory_efficient=True)(net, x_in, training=True)
    got = torch.autograd.grad((x_in + g_x).pow(2).sum() + 0 * logdet.sum(), [*net.parameters(), x_in])
    want = torch.autograd.grad((x_in + net(x_in)).pow(2).sum(), [*net.parameters(), x_in])
    _assert_all_close(got, want, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("grad", ["backprop", "neumann"])
def test_memory_efficient_takes_per_sample_weights_exactly(grad):
    """The backward pass weights each sample's log-det gradient by its own dL/dlogdet_b."""
    net, x = tied_mlp(3, 0.9), torch.randn(4, 3)
    weights = torch.arange(1.0, 5.0)
    grads = []
    for memory_efficient in (False, True):
        torch.manual_seed(7)
        estimator = PowerSeriesLogDet(n_terms=4, grad=grad, memory_efficient=memory_efficient)
        grads.append(_grads(estimator, net, x, weights))
    _assert_all_close(*grads, atol=1e-6, rtol=1e-5)


def _sn_conv_net() -> torch.nn.Sequential:
    from iresnet.lipschitz import LipSwish, spectral_norm

    def conv(c_in, c_out, k):
        return spectral_norm(torch.nn.Conv2d(c_in, c_out, k, padding=k // 2), 0.9, input_shape=(c_in, 6, 6))

    return torch.nn.Sequential(LipSwish(2), conv(2, 8, 3), LipSwish(8), conv(8, 2, 3)).double().train()


@pytest.mark.parametrize("grad", ["backprop", "neumann"])
# chunk_pixels=100 on 6x6 inputs: chunks of 2 samples.
@pytest.mark.parametrize("chunks", [{}, {"chunk_size": 1}, {"chunk_size": 3}, {"chunk_pixels": 100}])
def test_memory_efficient_chunks_match_plain_autograd_with_spectral_norm(grad, chunks):
    """Chunked evaluation and the recomputation in backward see the forward's weights: one
    power-iteration step per call, as in the plain path, and the same values and gradients."""
    torch.manual_seed(0)
    x = 0.5 * torch.randn(7, 2, 6, 6, dtype=torch.float64)
    results = []
    for memory_efficient, bounds in ((False, {}), (True, chunks)):
        torch.manual_seed(1)
        net = _sn_conv_net()
        estimator = PowerSeriesLogDet(n_terms=4, grad=grad, memory_efficient=memory_efficient, **bounds)
        x_in = x.clone().requires_grad_(True)
        g_x, logdet = estimator(net, x_in, training=True)
        weights = torch.linspace(0.5, 2.0, len(x), dtype=x.dtype)
        loss = (weights * logdet).sum() + (x_in + g_x).pow(2).sum()
        grads = torch.autograd.grad(loss, [*net.parameters(), x_in])
        results.append((g_x.detach(), logdet.detach(), grads, [b.clone() for b in net.buffers()]))
    (g0, ld0, grads0, bufs0), (g1, ld1, grads1, bufs1) = results
    torch.testing.assert_close(g1, g0)
    torch.testing.assert_close(ld1, ld0)
    _assert_all_close(grads1, grads0, atol=1e-9, rtol=1e-7)
    _assert_all_close(bufs1, bufs0, atol=0, rtol=0)


@pytest.mark.parametrize("chunk_size", [1, 4])
def test_graph_free_chunks_match_one_batch(chunk_size):
    torch.manual_seed(0)
    net, x = _sn_conv_net().eval(), torch.randn(6, 2, 6, 6, dtype=torch.float64)
    outs = []
    for chunks in (None, chunk_size):
        torch.manual_seed(2)
        with torch.no_grad():
            outs.append(PowerSeriesLogDet(n_terms=5, chunk_size=chunks)(net, x, training=False))
    _assert_all_close(outs[1], outs[0])


def test_graph_free_chunks_accept_a_plain_function():
    torch.manual_seed(0)
    net, x = tied_mlp(3, 0.8), torch.randn(5, 3)
    outs = []
    for chunks in (None, 2):
        torch.manual_seed(4)
        with torch.no_grad():
            outs.append(PowerSeriesLogDet(n_terms=4, chunk_size=chunks)(lambda v: net(v), x, training=False))
    _assert_all_close(outs[1], outs[0])


@pytest.mark.parametrize("bound", ["chunk_size", "chunk_pixels"])
def test_chunk_bounds_must_be_positive(bound):
    with pytest.raises(ValueError, match=bound):
        RouletteLogDet(**{bound: 0})


@pytest.mark.parametrize(
    "shape,bounds,samples",
    [
        ((64, 1, 28, 28), {"chunk_pixels": 12544}, 16),  # 16 images at 28x28
        ((64, 4, 14, 14), {"chunk_pixels": 12544}, 64),  # the same budget at 14x14
        ((64, 784), {"chunk_pixels": 12544}, 12544),  # flat: one position per sample
        ((64, 1, 28, 28), {"chunk_pixels": 100}, 1),  # at least one sample
        ((64, 4, 14, 14), {"chunk_pixels": 12544, "chunk_size": 32}, 32),  # both bounds hold
        ((64, 1, 28, 28), {"chunk_pixels": 12544, "chunk_size": 32}, 16),
        ((64, 1, 28, 28), {}, None),  # no bound: the whole batch
    ],
)
def test_samples_per_chunk(shape, bounds, samples):
    assert RouletteLogDet(**bounds).samples_per_chunk(torch.empty(shape)) == samples


def test_several_probe_rows_keep_second_derivatives_through_lipswish():
    """Batched VJP rows must not drop LipSwish's hand-written double backward (vmap would)."""
    from iresnet.lipschitz import LipSwish
    from iresnet.logdet._autograd import vjp

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 8), LipSwish(8), torch.nn.Linear(8, 3)).double()
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    g = net(x)
    u = torch.randn(4, 5, 3, dtype=torch.float64)
    batched = torch.autograd.grad(vjp(g, x, u, create_graph=True).pow(2).sum(), net[0].weight, retain_graph=True)[0]
    looped = sum(
        torch.autograd.grad(torch.autograd.grad(g, x, row, retain_graph=True, create_graph=True)[0].pow(2).sum(),
                            net[0].weight, retain_graph=True)[0]
        for row in u
    )
    torch.testing.assert_close(batched, looped)


def test_exact_logdet_gradient_through_lipswish_matches_finite_differences():
    from iresnet.lipschitz import LipSwish
    from iresnet.logdet import exact_logdet

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 16), LipSwish(16), torch.nn.Linear(16, 2)).double()
    with torch.no_grad():
        net[2].weight.mul_(0.3)
    x = torch.randn(6, 2, dtype=torch.float64)
    weight = net[2].weight

    def total() -> torch.Tensor:
        return exact_logdet(lambda v: v + net(v), x).sum()

    (grad,) = torch.autograd.grad(total(), weight)
    h = 1e-6
    with torch.no_grad():
        weight[0, 3] += h
        up = total()
        weight[0, 3] -= 2 * h
        down = total()
        weight[0, 3] += h
    assert grad[0, 3].item() == pytest.approx(((up - down) / (2 * h)).item(), rel=1e-5)
