"""The Neumann surrogate's gradient by a tangent sweep and its adjoint equals autograd's, to float64
rounding, and the memory-efficient estimator gives the same gradients through either path."""

from __future__ import annotations

import pytest
import torch
from test_logdet_products import conv_branch, fc_branch
from torch import nn

import iresnet.logdet.memory_efficient as memory_efficient
import iresnet.logdet.surrogate as surrogate
from iresnet.lipschitz import spectral_norm
from iresnet.lipschitz.activations import LipSwish
from iresnet.logdet import PowerSeriesLogDet, RouletteLogDet
from iresnet.logdet._autograd import batch_chunks, frozen_parametrizations
from iresnet.logdet.products import layer_tensors
from iresnet.logdet.series import neumann_surrogate
from iresnet.logdet.surrogate import sequential_surrogate_backward, sweep_samples
from iresnet.ops import Conv2d


def strided_branch() -> nn.Sequential:
    """Starts with a convolution (no pre-activation), a stride-2 layer, a bias-free layer, one beta."""
    return nn.Sequential(
        spectral_norm(Conv2d(2, 6, 3, padding=1, stride=2), coeff=0.9, input_shape=(6, 6)),
        LipSwish(),
        spectral_norm(Conv2d(6, 8, 1, bias=False), coeff=0.9),
        LipSwish(8),
    ).double()


def autograd_reference(net, x, probes, rows, chunks, grad_g, grad_logdet, params):
    grad_x, totals = torch.empty_like(x), None
    for part, part_rows in zip(chunks, rows):
        x_in = x[part].clone().requires_grad_(True)
        g = net(x_in)
        objective = neumann_surrogate(g, x_in, part_rows, probes[:, part])
        grads = torch.autograd.grad((g, objective), (x_in, *params), (grad_g[part], grad_logdet[part]), allow_unused=True)
        grad_x[part] = grads[0]
        totals = list(grads[1:]) if totals is None else [a if b is None else a + b for a, b in zip(totals, grads[1:])]
    return grad_x, totals


def sweep_gradients(net, x, probes, rows, chunks, grad_g, grad_logdet, params, need_x):
    """The sweep's gradients w.r.t. the layers' tensors, taken on to ``params`` by autograd, as the
    estimator's backward pass does."""
    with frozen_parametrizations(net):
        used = [layer_tensors(layer) for layer in net]
    grad_x, grads = sequential_surrogate_backward(net, used, x, probes, rows, chunks, grad_g, grad_logdet, need_x)
    tensors = [t for layer in used for t in layer]
    assert len(grads) == len(tensors)
    pairs = [(t, g) for t, g in zip(tensors, grads) if g is not None]
    assert all(t.requires_grad for t, _ in pairs)
    found = torch.autograd.grad([t for t, _ in pairs], params, [g for _, g in pairs], allow_unused=True)
    return grad_x, list(found)


def _case(make, shape, n_probes, chunk):
    torch.manual_seed(0)
    net = make().train()
    x = torch.randn(shape, dtype=torch.float64)
    net(x)  # one power-iteration step, as a forward pass takes
    chunks = batch_chunks(shape[0], chunk)
    probes = torch.randn(n_probes, *shape, dtype=torch.float64)
    out_shape = net(x).shape
    rows = [torch.randn(n_probes, part.stop - part.start, *out_shape[1:], dtype=torch.float64) for part in chunks]
    grad_g = torch.randn(out_shape, dtype=torch.float64)
    grad_logdet = torch.randn(shape[0], dtype=torch.float64)
    return net, x, probes, rows, chunks, grad_g, grad_logdet


@pytest.mark.parametrize(
    "make, shape", [(conv_branch, (5, 2, 6, 6)), (fc_branch, (5, 5)), (strided_branch, (5, 2, 6, 6))]
)
@pytest.mark.parametrize("n_probes", [1, 3])
@pytest.mark.parametrize("sweep_bytes", [None, 1])  # 1 byte: one sample per sweep
def test_sweep_equals_autograd(make, shape, n_probes, sweep_bytes, monkeypatch):
    if sweep_bytes is not None:
        monkeypatch.setattr(surrogate, "SWEEP_BYTES", sweep_bytes)
    net, x, probes, rows, chunks, grad_g, grad_logdet = _case(make, shape, n_probes, 3)
    params = list(net.parameters())
    arguments = [t.clone() for t in (x, probes, *rows, grad_g, grad_logdet)]
    got_x, got = sweep_gradients(net, x, probes, rows, chunks, grad_g, grad_logdet, params, True)
    with frozen_parametrizations(net):
        want_x, want = autograd_reference(net, x, probes, rows, chunks, grad_g, grad_logdet, params)
    torch.testing.assert_close(got_x, want_x, atol=1e-13, rtol=1e-12)
    assert len(got) == len(want) == len(params)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=1e-13, rtol=1e-12)
    # the caller's tensors are left as they were
    for before, after in zip(arguments, (x, probes, *rows, grad_g, grad_logdet)):
        assert torch.equal(before, after)


def test_frozen_parameters_and_no_input_gradient():
    net, x, probes, rows, chunks, grad_g, grad_logdet = _case(conv_branch, (4, 2, 6, 6), 1, 4)
    net[0].raw_beta.requires_grad_(False)
    params = [p for p in net.parameters() if p.requires_grad]
    with frozen_parametrizations(net):
        used = [layer_tensors(layer) for layer in net]
    got_x, grads = sequential_surrogate_backward(net, used, x, probes, rows, chunks, grad_g, grad_logdet, False)
    assert got_x is None
    assert grads[0] is None  # the frozen beta
    got_x, got = sweep_gradients(net, x, probes, rows, chunks, grad_g, grad_logdet, params, False)
    with frozen_parametrizations(net):
        _, want = autograd_reference(net, x, probes, rows, chunks, grad_g, grad_logdet, params)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=1e-13, rtol=1e-12)


def test_sweep_size_keeps_the_maps_within_the_budget():
    # The protocol's first-scale branch: 1 -> 64 (3x3), 64 -> 64 (1x1), 64 -> 1 (3x3) at 28x28, float32:
    # 2 + 4*64 + 2*64 + 4*64 + 2*64 = 770 maps of 784 pixels, 2.4 MB per sample.
    net = nn.Sequential(
        Conv2d(1, 64, 3, padding=1), LipSwish(64), Conv2d(64, 64, 1), LipSwish(64), Conv2d(64, 1, 3, padding=1)
    )
    x = torch.zeros(64, 1, 28, 28)
    assert sweep_samples(net, x, 1) == surrogate.SWEEP_BYTES // (770 * 784 * 4) == 13
    assert sweep_samples(net, x, 3) < 13
    assert sweep_samples(net, torch.zeros(2, 1, 4096, 4096), 1) == 1


class _Wrapped(nn.Module):
    """The same branch outside ``nn.Sequential``: the estimator differentiates it with autograd."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x)


@pytest.mark.parametrize(
    "estimator",
    [
        lambda: PowerSeriesLogDet(n_terms=4, n_probes=2, grad="neumann", memory_efficient=True, chunk_size=3),
        lambda: RouletteLogDet(n_exact_terms=2, grad="neumann", memory_efficient=True, chunk_pixels=72),
    ],
)
def test_estimator_gradients_equal_through_either_path(estimator, monkeypatch):
    sweeps = []
    original = memory_efficient.sequential_surrogate_backward
    monkeypatch.setattr(
        memory_efficient, "sequential_surrogate_backward", lambda *a, **k: sweeps.append(1) or original(*a, **k)
    )
    torch.manual_seed(0)
    x = 0.5 * torch.randn(7, 2, 6, 6, dtype=torch.float64)
    results = []
    for wrap in (False, True):
        torch.manual_seed(1)
        net = conv_branch().train()
        model = _Wrapped(net) if wrap else net
        torch.manual_seed(2)
        x_in = x.clone().requires_grad_(True)
        g_x, logdet = estimator()(model, x_in, training=True)
        weights = torch.linspace(0.5, 2.0, len(x), dtype=x.dtype)
        loss = (weights * logdet).sum() + (x_in + g_x).pow(2).sum()
        results.append((logdet.detach(), torch.autograd.grad(loss, [*net.parameters(), x_in])))
        assert len(sweeps) == 1  # the sequential branch took the sweep, the wrapped one autograd
    (logdet0, grads0), (logdet1, grads1) = results
    torch.testing.assert_close(logdet0, logdet1)
    for a, b in zip(grads0, grads1):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)


def test_a_step_under_bf16_autocast_takes_the_same_gradients_as_autograd(monkeypatch):
    """The forward's rows and g come out of autocast in bfloat16; the backward runs in the
    weights' float32, through the sweep as through autograd."""
    from iresnet.models import ResidualFlow

    grads = []
    for sweep in (True, False):
        if not sweep:
            monkeypatch.setattr(memory_efficient, "sequential_supported", lambda net: False)
        torch.manual_seed(0)
        model = ResidualFlow(input_shape=(1, 8, 8), n_blocks=[1, 1], hidden_channels=8, fc_blocks=1, fc_hidden=8)
        x = torch.rand(4, 1, 8, 8)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = -model.log_prob(x).mean()
        loss.backward()
        grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
    assert len(grads[0]) == len(grads[1]) > 0
    for a, b in zip(*grads):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-3)


def test_the_layers_tensors_are_read_once_per_call_and_a_lazy_branch_learns_its_size(monkeypatch):
    """The sweep's estimator reads each spectral-normalized weight once per call, whatever the
    number of chunks (one sigma per layer, none in the backward pass); a branch whose convolutions
    do not know their input size yet takes autograd's path for its first call, then the sweep."""
    from iresnet.lipschitz.parametrization import SpectralNorm

    estimates, sweeps = [], []
    original_estimate, original_sweep = SpectralNorm.estimate, memory_efficient.sequential_surrogate_backward
    monkeypatch.setattr(SpectralNorm, "estimate", lambda self, w: estimates.append(1) or original_estimate(self, w))
    monkeypatch.setattr(
        memory_efficient, "sequential_surrogate_backward", lambda *a, **k: sweeps.append(1) or original_sweep(*a, **k)
    )
    estimator = PowerSeriesLogDet(n_terms=3, grad="neumann", memory_efficient=True, chunk_size=2)
    torch.manual_seed(0)
    x = 0.5 * torch.randn(5, 2, 6, 6, dtype=torch.float64, requires_grad=True)
    net = conv_branch().train()
    estimates.clear()  # registering a parametrization evaluates it once
    g_x, logdet = estimator(net, x, training=True)
    (g_x.square().sum() + logdet.sum()).backward()
    assert len(estimates) == 3 and len(sweeps) == 1  # three convolutions, three chunks
    lazy = nn.Sequential(
        LipSwish(2), spectral_norm(Conv2d(2, 8, 3, padding=1), coeff=0.9), LipSwish(8),
        spectral_norm(Conv2d(8, 2, 3, padding=1), coeff=0.9),
    ).double()  # fmt: skip
    for call in range(2):
        g_x, logdet = estimator(lazy, x, training=True)
        grads = torch.autograd.grad(g_x.square().sum() + logdet.sum(), [x, *lazy.parameters()])
        assert all(torch.isfinite(g).all() for g in grads)
        assert len(sweeps) == 1 + call
