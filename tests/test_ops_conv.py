"""``iresnet.ops.Conv2d``: same function as ``nn.Conv2d``, hand-built second derivative."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

from iresnet.lipschitz import spectral_norm
from iresnet.ops import Conv2d
from iresnet.metrics import bits_per_dim
from iresnet.models import ResidualFlow

CONFIGS = [
    dict(kernel_size=3, padding=1),
    dict(kernel_size=5, padding=2),
    dict(kernel_size=3, padding=1, stride=2, bias=False),
    dict(kernel_size=3, padding=2, dilation=2),
    dict(kernel_size=1),
]


@pytest.mark.parametrize("config", CONFIGS, ids=str)
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("channels", [(3, 4), (1, 4), (4, 1), (1, 1)], ids=str)
def test_matches_nn_conv2d_and_passes_gradgradcheck(config, channels_last, channels):
    """Generic convolutions, and the one-channel unfold path (stride 1, 'same' padding)."""
    torch.manual_seed(0)
    conv = Conv2d(*channels, **config).double()
    reference = torch.nn.Conv2d(*channels, **config).double()
    reference.load_state_dict(conv.state_dict())
    x = torch.randn(2, channels[0], 7, 7, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(conv(x), reference(x), rtol=0, atol=1e-12)
    args = (x.requires_grad_(True), conv.weight) + ((conv.bias,) if conv.bias is not None else ())

    def fn(x, w, b=None):
        return conv._conv_forward(x, w, b)

    assert torch.autograd.gradcheck(fn, args)
    assert torch.autograd.gradgradcheck(fn, args)


@pytest.mark.parametrize("channels", [(1, 64), (64, 1)], ids=str)
def test_one_channel_path_matches_aten_in_float32(channels):
    """The channels-last matrix-product path against oneDNN's kernels at model sizes."""
    from iresnet.ops.conv import _one_channel, conv_forward, conv_input_grad, conv_weight_grad

    torch.manual_seed(0)
    layout = torch.channels_last
    c_in, c_out = channels
    x = torch.randn(8, c_in, 28, 28).contiguous(memory_format=layout)
    w = torch.randn(c_out, c_in, 3, 3).contiguous(memory_format=layout)
    b = torch.randn(c_out)
    grad_out = torch.randn(8, c_out, 28, 28).contiguous(memory_format=layout)
    conf = ((1, 1), (1, 1), (1, 1))
    assert _one_channel(w, conf)
    gx, gw, _ = torch.ops.aten.convolution_backward(
        grad_out, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, [True, True, False]
    )
    torch.testing.assert_close(conv_forward(x, w, b, conf), F.conv2d(x, w, b, 1, 1), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(conv_input_grad(grad_out, x, w, conf), gx, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(conv_weight_grad(grad_out, x, w, conf), gw, rtol=1e-4, atol=1e-3)
    assert not _one_channel(w, ((2, 2), (1, 1), (1, 1)))


@pytest.mark.parametrize("kernel", [(3, 3), (5, 3), (1, 3), (3, 5)], ids=str)
def test_one_channel_unfold_and_fold_match_aten(kernel):
    """The one-channel path's own unfold and fold against ATen's im2col and col2im, for taps in
    either memory order (the 1x1 convolution gives them tap-innermost), and fold under vmap."""
    from iresnet.ops.conv import _fold, _unfold

    torch.manual_seed(0)
    kh, kw = kernel
    padding = (kh // 2, kw // 2)
    x = torch.randn(3, 1, 6, 7, dtype=torch.float64)
    taps = torch.randn(3, kh * kw, 6 * 7, dtype=torch.float64)
    for layout in (torch.contiguous_format, torch.channels_last):
        assert torch.equal(_unfold(x.contiguous(memory_format=layout), kh, kw), F.unfold(x, kernel, padding=padding))
    expected = F.fold(taps, (6, 7), kernel, padding=padding)
    tap_innermost = taps.transpose(1, 2).contiguous().transpose(1, 2)
    for t in (taps, tap_innermost):
        folded = _fold(t, kh, kw, 6, 7)
        torch.testing.assert_close(folded, expected, rtol=0, atol=1e-12)
        assert folded.is_contiguous()
    batched = torch.func.vmap(lambda t: _fold(t, kh, kw, 6, 7))(torch.stack([taps, 2 * taps]))
    torch.testing.assert_close(batched, torch.stack([expected, 2 * expected]), rtol=0, atol=1e-12)
    # fold is unfold's adjoint: <unfold(x), taps> = <x, fold(taps)>.
    torch.testing.assert_close((_unfold(x, kh, kw) * taps).sum(), (x * _fold(taps, kh, kw, 6, 7)).sum())


def test_fold_targets_are_built_once_per_shape_and_outlive_inference_mode():
    """The fold's index is cached per shape; one first built under ``inference_mode`` is an ordinary
    tensor, so a training step after an inference-mode evaluation still differentiates the fold."""
    from iresnet.ops.conv import _fold_targets

    _fold_targets.cache_clear()
    with torch.inference_mode():
        first = _fold_targets(3, 3, 5, 6, torch.device("cpu"))
    assert not first.is_inference() and not first.requires_grad
    assert _fold_targets(3, 3, 5, 6, torch.device("cpu")) is first
    assert _fold_targets(3, 3, 5, 7, torch.device("cpu")) is not first
    torch.manual_seed(0)
    conv = Conv2d(4, 1, 3, padding=1).double()
    x = torch.randn(2, 4, 5, 6, dtype=torch.float64)
    with torch.inference_mode():
        conv(x)
    x.requires_grad_(True)
    gx, gw = torch.autograd.grad(conv(x).square().sum(), (x, conv.weight))
    ex, ew = torch.autograd.grad(F.conv2d(x, conv.weight, conv.bias, 1, 1).square().sum(), (x, conv.weight))
    torch.testing.assert_close((gx, gw), (ex, ew), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("channels", [(1, 4), (4, 1)], ids=str)
def test_batched_vector_jacobian_products_match_one_row_at_a_time(channels, channels_last):
    """Several probes share one vmapped backward pass (``is_grads_batched``); the one-channel
    path must run under vmap and give the rows' own products."""
    from iresnet.logdet._autograd import vjp

    torch.manual_seed(0)
    conv = Conv2d(*channels, 3, padding=1)
    x = torch.randn(2, channels[0], 5, 5)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    out = conv(x)
    rows = torch.randn(3, *out.shape)
    looped = torch.stack([torch.autograd.grad(out, x, row, retain_graph=True)[0] for row in rows])
    torch.testing.assert_close(vjp(out, x, rows, create_graph=False), looped)


def test_a_product_with_respect_to_the_input_skips_the_weight_gradient_and_vice_versa(monkeypatch):
    """The estimators take many products w.r.t. the input alone; the parameters' gradients are
    a node of their own, which autograd runs only when they are wanted."""
    calls = []
    original = torch.ops.aten.convolution_backward

    class Spy:
        def __call__(self, *args):
            calls.append(args[-1])
            return original(*args)

    monkeypatch.setattr(torch.ops.aten, "convolution_backward", Spy())
    conv = spectral_norm(Conv2d(2, 3, 3, padding=1), 0.9, input_shape=(2, 5, 5))
    x = torch.randn(4, 2, 5, 5, requires_grad=True)
    out = conv(x)
    calls.clear()  # the spectral norm's power iteration applies the adjoint in the forward pass
    torch.autograd.grad(out.sum(), x, retain_graph=True)
    assert calls == [[True, False, False]]
    calls.clear()
    torch.autograd.grad(out.sum(), conv.parametrizations.weight.original)
    assert calls == [[False, True, False]]


def test_one_channel_path_is_for_cpu_tensors_only():
    from iresnet.ops.conv import _one_channel

    conf = ((1, 1), (1, 1), (1, 1))
    assert _one_channel(torch.empty(1, 4, 3, 3), conf)
    assert not _one_channel(torch.empty(1, 4, 3, 3, device="meta"), conf)  # elsewhere F.conv2d


def test_residual_flow_gradients_match_plain_convolutions(monkeypatch):
    """End to end, Neumann gradient (a double backward through every conv) as with F.conv2d."""
    torch.manual_seed(0)
    model = ResidualFlow((1, 8, 8), n_blocks=(1, 1), hidden_channels=8, fc_blocks=1, fc_hidden=8).double()
    x = torch.rand(6, 1, 8, 8, dtype=torch.float64)
    state = {k: v.clone() for k, v in model.state_dict().items()}

    def grads():
        model.load_state_dict(state)
        model.zero_grad()
        torch.manual_seed(1)
        bits_per_dim(model.log_prob(x), 64).mean().backward()
        return [p.grad.clone() for p in model.parameters()]

    ours = grads()
    monkeypatch.setattr(Conv2d, "_conv_forward", lambda self, x, w, b: F.conv2d(x, w, b, self.stride, self.padding, self.dilation))
    plain = grads()
    for a, b in zip(ours, plain):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kwargs", [dict(groups=2), dict(padding="same"), dict(padding=1, padding_mode="circular")])
def test_unsupported_settings_are_refused(kwargs):
    with pytest.raises(ValueError, match="torch.nn.Conv2d"):
        Conv2d(2, 4, 3, **kwargs)


@pytest.mark.skipif(bool(os.environ.get("TORCHDYNAMO_DISABLE")), reason="compilation turned off")
def test_compiles_with_fullgraph_and_equals_eager():
    torch._dynamo.reset()
    torch.manual_seed(0)
    module = torch.nn.Sequential(Conv2d(2, 4, 3, padding=1), torch.nn.SiLU(), Conv2d(4, 1, 3, padding=1)).eval()
    compiled = torch.compile(module, fullgraph=True)
    x = torch.randn(3, 2, 6, 6, requires_grad=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), module(x))
    out, eager = compiled(x), module(x)
    torch.testing.assert_close(out, eager)
    inputs = [x, *module.parameters()]
    for a, b in zip(torch.autograd.grad(out.sum(), inputs), torch.autograd.grad(eager.sum(), inputs)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
