"""Power-series estimator: exact-trace values, convergence, probes, graph handling, validation."""

from __future__ import annotations

import pytest
import torch
from test_logdet_nets import (
    dense_jacobians,
    exact_logdet_reference,
    series_from_jacobians,
    tied_conv,
    tied_mlp,
    use_exact_traces,
)
from torch import nn

from iresnet.logdet import PowerSeriesLogDet, RouletteLogDet, sample_probe


@pytest.mark.parametrize(
    "net, shape",
    [(tied_mlp(4, 0.9), (6, 4)), (tied_conv(1, 3, 0.9), (3, 1, 3, 3))],
    ids=["mlp", "conv"],
)
def test_series_equals_truncated_trace_series(net, shape, monkeypatch):
    use_exact_traces(monkeypatch)
    x = 0.5 * torch.randn(shape)
    jac = dense_jacobians(net, x)
    for n_terms in (1, 3, 7):
        _, logdet = PowerSeriesLogDet(n_terms=n_terms)(net, x, training=True)
        torch.testing.assert_close(logdet, series_from_jacobians(jac, [1.0] * n_terms), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("coeff", [0.5, 0.9])
def test_series_converges_to_exact_logdet(coeff, monkeypatch):
    use_exact_traces(monkeypatch)
    net = tied_mlp(4, coeff)
    x = 0.3 * torch.randn(8, 4)
    exact = exact_logdet_reference(net, x).detach()
    errors = {}
    for n_terms in (2, 5, 20):
        with torch.no_grad():
            _, logdet = PowerSeriesLogDet(n_terms=n_terms)(net, x, training=False)
        errors[n_terms] = (logdet - exact).abs().max().item()
    assert errors[2] > errors[5] > errors[20]
    assert errors[20] < 0.05 * errors[2]
    # |tail after n terms| <= D * sum_{k>n} coeff^k / k <= D coeff^(n+1) / ((n+1)(1-coeff)).
    assert errors[20] < 4 * coeff**21 / (21 * (1 - coeff)) + 1e-5


def test_hutchinson_estimate_is_unbiased_with_many_probes():
    net = tied_mlp(4, 0.5)
    x = 0.3 * torch.randn(4, 4)
    expected = series_from_jacobians(dense_jacobians(net, x), [1.0] * 3)
    for probe in ("gaussian", "rademacher"):
        torch.manual_seed(0)
        with torch.no_grad():
            _, logdet = PowerSeriesLogDet(n_terms=3, n_probes=20000, probe=probe)(net, x, training=True)
        torch.testing.assert_close(logdet, expected, atol=0.02, rtol=0)


def test_batched_probes_average_single_probe_estimates():
    net = tied_mlp(3, 0.8)
    x = torch.randn(5, 3)
    torch.manual_seed(1)
    probes = sample_probe(x, "gaussian", 4)
    singles = []
    for i in range(4):
        torch.manual_seed(2)
        estimator = PowerSeriesLogDet(n_terms=4)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr("iresnet.logdet.base.sample_probe", lambda like, kind, n: probes[i : i + 1])
            singles.append(estimator(net, x, training=True)[1])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("iresnet.logdet.base.sample_probe", lambda like, kind, n: probes)
        _, batched = PowerSeriesLogDet(n_terms=4, n_probes=4)(net, x, training=True)
    torch.testing.assert_close(batched, torch.stack(singles).mean(0))


def test_sample_probe_shapes_and_moments():
    like = torch.zeros(3, 2, 5, dtype=torch.float64)
    torch.manual_seed(0)
    rad = sample_probe(like, "rademacher", 7)
    assert rad.shape == (7, 3, 2, 5) and rad.dtype == torch.float64
    assert set(rad.unique().tolist()) == {-1.0, 1.0}
    gauss = sample_probe(torch.zeros(1, 4), "gaussian", 50000).flatten(1)
    torch.testing.assert_close(gauss.T @ gauss / 50000, torch.eye(4, dtype=gauss.dtype), atol=0.03, rtol=0)


@pytest.mark.parametrize("kind", ["gaussian", "rademacher"])
def test_channels_last_probes_keep_the_layout_and_the_law(kind):
    """Probes of channels-last maps are drawn in contiguous memory seen as channels-last."""
    like = torch.zeros(2, 3, 2, 2).contiguous(memory_format=torch.channels_last)
    torch.manual_seed(0)
    probes = sample_probe(like, kind, 20000)
    assert probes.shape == (20000, 2, 3, 2, 2)
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in probes[:3])
    flat = probes.flatten(1)  # 24 entries per probe, E[v v^T] = I
    torch.testing.assert_close(flat.T @ flat / len(flat), torch.eye(24), atol=0.04, rtol=0)
    if kind == "rademacher":
        assert set(flat.unique().tolist()) == {-1.0, 1.0}


class CountingNet(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net, self.calls = net, 0

    def forward(self, x):
        self.calls += 1
        return self.net(x)


@pytest.mark.parametrize(
    "estimator, training_calls, graph_free_calls",
    [
        (PowerSeriesLogDet(n_terms=6, n_probes=3), 1, 1),
        (PowerSeriesLogDet(grad="neumann"), 1, 1),
        # memory-efficient: once in forward, once more in backward (recomputed, not stored)
        (PowerSeriesLogDet(memory_efficient=True), 2, 1),
        (RouletteLogDet(), 2, 1),
        (RouletteLogDet(chunk_size=3), 4, 2),  # two chunks of a batch of 4
    ],
    ids=repr,
)
def test_net_evaluations_per_call(estimator, training_calls, graph_free_calls):
    net = CountingNet(tied_mlp(3, 0.9))
    estimator(net, torch.randn(4, 3), training=True)[1].mean().backward()
    assert net.calls == training_calls
    with torch.no_grad():
        estimator(net, torch.randn(4, 3), training=False)
    assert net.calls == training_calls + graph_free_calls


@pytest.mark.parametrize(
    "estimator",
    [PowerSeriesLogDet(n_terms=8), PowerSeriesLogDet(n_terms=8, grad="neumann", memory_efficient=True)],
    ids=repr,
)
def test_no_grad_and_inference_mode_return_detached_correct_values(estimator, monkeypatch):
    use_exact_traces(monkeypatch)
    net = tied_mlp(4, 0.7)
    x = torch.randn(5, 4)
    _, with_grad = estimator(net, x, training=True)
    for context in (torch.no_grad, torch.inference_mode):
        with context():
            g_x, logdet = estimator(net, x, training=True)
        assert g_x.grad_fn is None and logdet.grad_fn is None
        assert not g_x.requires_grad and not logdet.requires_grad
        torch.testing.assert_close(g_x, net(x).detach())
        torch.testing.assert_close(logdet, with_grad.detach())


def test_input_without_grad_still_trains_parameters():
    net = tied_mlp(3, 0.9)
    x = torch.randn(4, 3)
    g_x, logdet = PowerSeriesLogDet()(net, x, training=True)
    (x + g_x).sum().add(logdet.mean()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_statistics_are_recorded():
    estimator = PowerSeriesLogDet(n_terms=4)
    _, logdet = estimator(tied_mlp(3, 0.5), torch.randn(4, 3), training=True)
    assert estimator.last_n_terms == 4
    torch.testing.assert_close(estimator.last_logdet, logdet.detach())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n_terms=0), "n_terms must be an integer >= 1, got 0"),
        (dict(n_probes=0), "n_probes must be an integer >= 1"),
        (dict(probe="uniform"), "unknown probe 'uniform'"),
        (dict(grad="implicit"), "unknown grad mode 'implicit'"),
    ],
)
def test_series_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PowerSeriesLogDet(**kwargs)


def test_sample_probe_rejects_unknown_kind():
    with pytest.raises(ValueError, match="unknown probe 'sphere'"):
        sample_probe(torch.zeros(2, 3), "sphere")
