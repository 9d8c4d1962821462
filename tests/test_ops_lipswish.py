"""LipSwish and CLipSwish as ordinary PyTorch: values and first and second derivatives equal
those of the plain formulas, ``torch.compile`` fuses them, and nothing native is built."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from iresnet.lipschitz import CLipSwish, LipSwish
from iresnet.ops.lipswish import lipswish


def plain_lipswish(x: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(beta * x) / 1.1


def plain_clipswish(x: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    return torch.cat([plain_lipswish(x, beta), plain_lipswish(-x, beta)], dim=1) / 1.004


def _module_and_reference(concatenated: bool, per_channel: bool, channels: int = 3):
    if concatenated:
        module, name, plain = CLipSwish(channels if per_channel else None), "lipswish.raw_beta", plain_clipswish
    else:
        module, name, plain = LipSwish(channels, per_channel=per_channel), "raw_beta", plain_lipswish
    module = module.double()

    def ours(x, raw_beta):
        return torch.func.functional_call(module, {name: raw_beta}, (x,))

    def reference(x, raw_beta):
        return plain(x, nn.functional.softplus(raw_beta).view(1, -1, 1, 1))

    return ours, reference


@pytest.mark.parametrize("per_channel", [True, False], ids=["per_channel", "scalar"])
@pytest.mark.parametrize("concatenated", [False, True], ids=["lipswish", "clipswish"])
def test_values_and_two_derivatives_equal_the_plain_formula(concatenated, per_channel):
    torch.manual_seed(0)
    ours, reference = _module_and_reference(concatenated, per_channel)
    x = (4 * torch.randn(2, 3, 3, 3, dtype=torch.float64)).requires_grad_()
    raw_beta = torch.randn(3 if per_channel else 1, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(ours, (x, raw_beta))
    assert torch.autograd.gradgradcheck(ours, (x, raw_beta))

    def derivatives(fn):
        out = fn(x, raw_beta)
        v = torch.linspace(-1, 1, out.numel(), dtype=torch.float64).view_as(out)
        first = torch.autograd.grad(out, (x, raw_beta), v, create_graph=True)
        w = torch.cos(torch.arange(x.numel(), dtype=torch.float64)).view_as(x)
        second = torch.autograd.grad((first[0] * w).sum() + first[1].sum(), (x, raw_beta))
        return out, *first, *second

    for a, b in zip(derivatives(ours), derivatives(reference)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    with torch.no_grad():
        torch.testing.assert_close(ours(x, raw_beta), reference(x, raw_beta), rtol=1e-10, atol=1e-12)


def test_a_product_with_respect_to_the_input_alone_leaves_beta_out():
    """The log-det series take many products w.r.t. the input only: autograd's own pruning skips
    beta's terms there, and a later product with respect to beta still gets them."""
    torch.manual_seed(0)
    act = LipSwish(3)
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    y = act(x)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        torch.autograd.grad(y, x, torch.ones_like(y), retain_graph=True)
    assert not any(event.name == "aten::sum" for event in profile.events())  # no reduction to beta's shape
    (grad_beta,) = torch.autograd.grad(y, act.raw_beta, torch.ones_like(y))
    assert grad_beta.abs().sum() > 0


@pytest.mark.skipif(bool(os.environ.get("TORCHDYNAMO_DISABLE")), reason="compilation turned off")
def test_compile_fuses_lipswish_and_a_compiled_module_equals_eager():
    from torch._inductor import metrics

    torch._dynamo.reset()
    torch.manual_seed(0)
    x = torch.randn(4, 6, 5, 5)
    beta = torch.rand(1, 6, 1, 1) + 0.5
    metrics.reset()
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(lipswish, fullgraph=True)(x, beta), lipswish(x, beta))
    assert metrics.generated_kernel_count == 1  # one loop, not one pass per operation

    module = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), LipSwish(4), nn.Conv2d(4, 4, 1), CLipSwish(4), nn.Conv2d(8, 2, 3, padding=1)
    ).eval()
    compiled = torch.compile(module, fullgraph=True)
    x = torch.randn(3, 2, 6, 6, requires_grad=True)
    out, eager = compiled(x), module(x)
    torch.testing.assert_close(out, eager)
    v = torch.randn_like(out)
    params = list(module.parameters())
    for a, b in zip(torch.autograd.grad(out, [x, *params], v), torch.autograd.grad(eager, [x, *params], v)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


_TRAIN_STEP = """
import sys, warnings
warnings.simplefilter("error")
import torch
from iresnet.models import ResidualFlow
torch.manual_seed(0)
model = ResidualFlow((1, 8, 8), n_blocks=(1, 1), hidden_channels=8, fc_blocks=1, fc_hidden=8)
model.log_prob(torch.rand(4, 1, 8, 8)).mean().neg().backward()
assert all(p.grad is None or bool(p.grad.isfinite().all()) for p in model.parameters())
print(sorted({"torch.utils.cpp_extension", "ninja"} & set(sys.modules)))
"""


def test_a_training_step_needs_no_compiler_and_warns_nothing(tmp_path):
    env = {**os.environ, "CXX": "/bin/false", "CC": "/bin/false", "PATH": os.path.dirname(sys.executable)}
    env["TORCH_EXTENSIONS_DIR"] = str(tmp_path / "extensions")
    done = subprocess.run([sys.executable, "-c", _TRAIN_STEP], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[]"] and "Warning" not in done.stderr
    assert not (tmp_path / "extensions").exists()
