"""LipSwish and CLipSwish are 1-Lipschitz; the activation factory; the fused kernels."""

import os
import shutil
import warnings

import pytest
import torch
from torch import nn

from iresnet.lipschitz import CLipSwish, LipSwish, activation_channel_multiplier, get_activation
from iresnet.lipschitz.activations import CLIPSWISH_SCALE
from iresnet.ops import lipswish as kernels
from iresnet.ops.lipswish import LIPSWISH_SCALE


def _set_beta(act: LipSwish, beta: torch.Tensor) -> None:
    with torch.no_grad():
        act.raw_beta.copy_(torch.log(torch.expm1(beta)))


def test_lipswish_starts_at_beta_one():
    torch.testing.assert_close(LipSwish(4).beta, torch.ones(4))
    torch.testing.assert_close(LipSwish().beta, torch.ones(1))


@pytest.mark.parametrize("beta", [0.1, 0.5, 1.0, 2.0, 10.0])
def test_lipswish_derivative_is_at_most_one(beta):
    act = LipSwish().double()
    _set_beta(act, torch.tensor([beta], dtype=torch.float64))
    x = torch.linspace(-50, 50, 100_001, dtype=torch.float64, requires_grad=True).reshape(1, -1)
    (slope,) = torch.autograd.grad(act(x).sum(), x)
    assert slope.abs().max() <= 1.0
    assert slope.max() > 0.999  # the 1.1 scale is nearly tight


def test_clipswish_constant_is_the_jacobian_bound():
    # The Jacobian norm at x is sqrt(f'(x)^2 + f'(-x)^2) (see activations.py); its sup with the
    # 1.1 scale alone must lie just under CLIPSWISH_SCALE.
    z = torch.linspace(-20, 20, 400_001, dtype=torch.float64)
    s = torch.sigmoid(z) * (1 + z * (1 - torch.sigmoid(z)))
    sup = ((s**2 + s.flip(0) ** 2).sqrt() / LIPSWISH_SCALE).max().item()
    assert sup == pytest.approx(1.00397, abs=1e-5)
    assert sup <= CLIPSWISH_SCALE


@pytest.mark.parametrize("cls", [LipSwish, CLipSwish])
def test_dense_jacobian_norm_is_at_most_one(cls):
    torch.manual_seed(0)
    act = cls(3).double()
    _set_beta(act if cls is LipSwish else act.lipswish, torch.tensor([0.3, 1.0, 4.0], dtype=torch.float64))
    for _ in range(20):
        x = 3 * torch.randn(1, 3, 2, 2, dtype=torch.float64)
        jacobian = torch.autograd.functional.jacobian(act, x).reshape(-1, x.numel())
        assert torch.linalg.matrix_norm(jacobian, ord=2) <= 1.0


def test_clipswish_worst_case_is_tight():
    # At beta x = 2.3994 the LipSwish slope peaks, where the CLipSwish Jacobian norm is largest.
    act = CLipSwish().double()
    x = torch.full((1, 1), 2.3994, dtype=torch.float64)
    jacobian = torch.autograd.functional.jacobian(act, x).reshape(2, 1)
    assert 0.999 < torch.linalg.matrix_norm(jacobian, ord=2) <= 1.0


def test_clipswish_doubles_channels():
    assert CLipSwish(4)(torch.randn(2, 4, 3, 3)).shape == (2, 8, 3, 3)
    assert CLipSwish()(torch.randn(2, 4)).shape == (2, 8)


@pytest.mark.parametrize(
    "name, cls, multiplier",
    [
        ("elu", nn.ELU, 1),
        ("relu", nn.ReLU, 1),
        ("softplus", nn.Softplus, 1),
        ("LipSwish", LipSwish, 1),
        ("clipswish", CLipSwish, 2),
    ],
)
def test_get_activation(name, cls, multiplier):
    assert isinstance(get_activation(name, num_channels=3), cls)
    assert activation_channel_multiplier(name) == multiplier


def test_unknown_activation_lists_valid_names():
    with pytest.raises(ValueError, match="elu, relu, softplus, lipswish, clipswish"):
        get_activation("tanh")
    with pytest.raises(ValueError, match="unknown activation"):
        activation_channel_multiplier("swish")


def test_lipswish_hand_written_derivatives_match_autograd_to_second_order():
    """The fused LipSwish agrees with autograd of x*sigmoid(beta x)/1.1 in value, first and second derivatives."""
    from iresnet.ops.lipswish import _LipSwishFunction

    torch.manual_seed(0)
    x = torch.randn(3, 4, 2, 2, dtype=torch.float64, requires_grad=True)
    for beta in (torch.rand(1, 4, 1, 1, dtype=torch.float64) + 0.3, torch.rand(1, dtype=torch.float64) + 0.3):
        beta.requires_grad_()
        assert torch.autograd.gradcheck(_LipSwishFunction.apply, (x, beta))
        assert torch.autograd.gradgradcheck(_LipSwishFunction.apply, (x, beta))
        reference = x * torch.sigmoid(beta * x) / 1.1
        torch.testing.assert_close(_LipSwishFunction.apply(x, beta), reference)


def test_lipswish_skips_unrequested_beta_gradient_but_keeps_requested_one():
    torch.manual_seed(0)
    act = LipSwish(3).double()
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    y = act(x)
    v = torch.randn_like(y)
    (gx,) = torch.autograd.grad(y, x, v, retain_graph=True)
    gx_ref, gb_ref = torch.autograd.grad(x * torch.sigmoid(act.beta.view(1, -1, 1, 1) * x) / 1.1, (x, act.raw_beta), v)
    torch.testing.assert_close(gx, gx_ref)
    (gb,) = torch.autograd.grad(y, act.raw_beta, v)
    torch.testing.assert_close(gb, gb_ref)


def _fused_kernels():
    return [kernels.lipswish_and_slope, kernels.lipswish_beta_grad, kernels.lipswish_slope_grads]


_NO_COMPILER = not any(shutil.which(c) for c in (os.environ.get("CXX", "g++"), "g++", "clang++"))


@pytest.mark.skipif(bool(os.environ.get("TORCHDYNAMO_DISABLE")) or _NO_COMPILER, reason="no compilation here")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_lipswish_kernels_compile_and_match_their_eager_formulas(dtype):
    """The compiled route (other devices than the CPU), run here on CPU tensors."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()  # other tests' variants count towards torch's recompile limit
    counters.clear()
    torch.manual_seed(0)
    x = (3 * torch.randn(5, 6, 7, 7, dtype=dtype)).contiguous(memory_format=torch.channels_last)
    beta = torch.rand(1, 6, 1, 1, dtype=dtype) + 0.3
    grad, gg = torch.randn_like(x), torch.randn_like(x)
    inputs = {0: (x, beta), 1: (grad, x, beta), 2: (gg, grad, x, beta)}
    for i, kernel in enumerate(_fused_kernels()):
        fused_out, eager_out = kernel.compiled(*inputs[i]), kernel.eager(*inputs[i])
        assert not kernel.failures, kernel.failures
        assert counters["stats"]["unique_graphs"] == i + 1  # compiled, not run eagerly
        for a, b in zip(torch.utils._pytree.tree_leaves(fused_out), torch.utils._pytree.tree_leaves(eager_out)):
            torch.testing.assert_close(a, b)


def test_fused_formula_falls_back_to_eager_once_with_a_warning():
    from iresnet.ops.fusion import fused

    @fused()
    def data_dependent(x):
        # A Python branch on a value: fullgraph compilation refuses it.
        return x * 2 if x.sum().item() > 0 else x

    x = torch.ones(3)
    with pytest.warns(RuntimeWarning, match="running it eagerly"):
        torch.testing.assert_close(data_dependent(x), 2 * x)
    assert data_dependent.failures
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.testing.assert_close(data_dependent(-x), -x)  # eager from now on, silently


@pytest.mark.skipif(_NO_COMPILER or os.environ.get("IRESNET_NATIVE") == "0", reason="no native code here")
def test_lipswish_runs_its_cpu_operators_in_training_mode_only_and_never_compiles_on_the_cpu():
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    act = LipSwish(3)
    x = torch.randn(4, 3, 5, 5, requires_grad=True)
    for training, operators in ((False, set()), (True, {"iresnet::lipswish_and_slope", "iresnet::lipswish_beta_grad"})):
        act.train(training)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
            torch.autograd.grad(act(x), (x, act.raw_beta), torch.randn_like(x))
        # the operators are ordinary torch.library operators: the profiler sees them
        assert {e.name for e in profile.events() if e.name.startswith("iresnet::")} == operators
    assert counters["stats"]["unique_graphs"] == 0
