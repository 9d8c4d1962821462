"""LipSwish's C++ operators (torch.library, built by cpp_extension): against their PyTorch
formulas, seen by torch.compile and torch.export, in torch's thread pool, and optional."""

import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

import iresnet.ops.lipswish as ops

_NO_NATIVE = os.environ.get("IRESNET_NATIVE") == "0" or not any(
    shutil.which(c) for c in (os.environ.get("CXX", "c++"), "g++", "c++")
)
needs_native = pytest.mark.skipif(_NO_NATIVE, reason="no C++ compiler, or IRESNET_NATIVE=0")

# (name, x shape, beta shape, memory format): channels-last and contiguous maps, a (B, C)
# matrix, one shared beta, and sizes that leave partial vectors and span several tasks.
LAYOUTS = [
    ("channels_last", (3, 19, 29, 31), (19, 1, 1), torch.channels_last),
    ("contiguous", (3, 19, 29, 31), (19, 1, 1), torch.contiguous_format),
    ("beta_1c11", (2, 5, 3, 7), (1, 5, 1, 1), torch.channels_last),
    ("matrix", (37, 13), (13,), torch.contiguous_format),
    ("shared_beta", (2, 4, 9, 9), (1, 1, 1), torch.channels_last),
    ("small", (1, 3, 1, 1), (3, 1, 1), torch.contiguous_format),
]
OPERATORS = [  # (operator, its formula, number of maps it takes)
    ("lipswish_and_slope", ops.lipswish_and_slope.eager, 1),
    ("lipswish_beta_grad", ops.lipswish_beta_grad.eager, 2),
    ("lipswish_slope_grads", ops.lipswish_slope_grads.eager, 3),
]


@pytest.fixture(scope="module")
def operators():
    if not ops._operators():
        pytest.fail(f"the C++ operators did not build: {ops.load_extension.__module__}.failures")
    return torch.ops.iresnet


def _inputs(shape, beta_shape, memory_format, dtype, n_maps, seed=0):
    torch.manual_seed(seed)
    maps = [(3 * torch.randn(shape, dtype=dtype)).contiguous(memory_format=memory_format) for _ in range(n_maps)]
    return maps, torch.rand(beta_shape, dtype=dtype) + 0.3


def _assert_matches(got, expected, x, dtype):
    for a, b in zip(torch.utils._pytree.tree_leaves(got), torch.utils._pytree.tree_leaves(expected)):
        assert a.shape == b.shape and a.dtype == b.dtype
        # absolute error relative to the map's scale: the curvature 2 + z (1 - 2s) cancels
        scale = b.abs().max().item()
        eps = 1e-6 if dtype == torch.float32 else 1e-14
        torch.testing.assert_close(a, b, rtol=10 * eps, atol=eps * scale)


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layout", LAYOUTS, ids=[layout[0] for layout in LAYOUTS])
def test_operators_match_their_formulas(operators, layout, dtype):
    _, shape, beta_shape, memory_format = layout
    maps, beta = _inputs(shape, beta_shape, memory_format, dtype, 3)
    x = maps[-1]
    for name, formula, n_maps in OPERATORS:
        args = (*maps[3 - n_maps :], beta)
        got = getattr(operators, name)(*args)
        _assert_matches(got, formula(*args), x, dtype)
        if name == "lipswish_and_slope":
            assert all(t.stride() == x.stride() for t in got)  # laid out as x


@needs_native
def test_operators_take_any_strides_and_check_their_inputs(operators):
    (grad, x), beta = _inputs((2, 4, 6, 6), (4, 1, 1), torch.channels_last, torch.float32, 2)
    for x_odd, grad_odd in [(x[:, :, ::2], grad[:, :, ::2]), (x.permute(0, 2, 1, 3), grad.permute(0, 2, 1, 3))]:
        beta_odd = torch.rand(x_odd.shape[1], 1, 1) + 0.3
        _assert_matches(operators.lipswish_and_slope(x_odd, beta_odd), ops.lipswish_and_slope.eager(x_odd, beta_odd),
                        x_odd, torch.float32)  # fmt: skip
    _assert_matches(operators.lipswish_beta_grad(grad.contiguous(), x, beta),
                    ops.lipswish_beta_grad.eager(grad, x, beta), x, torch.float32)  # fmt: skip
    with pytest.raises(RuntimeError, match="share a dtype"):
        operators.lipswish_and_slope(x, beta.double())
    with pytest.raises(RuntimeError, match="one per channel"):
        operators.lipswish_and_slope(x, torch.rand(3, 1, 1))
    with pytest.raises(RuntimeError, match="Half"):
        operators.lipswish_and_slope(x.half(), beta.half())


@needs_native
def test_fused_kernels_route_what_the_operators_do_not_take_to_the_formula(operators):
    (x,), beta = _inputs((2, 4, 6, 6), (4, 1, 1), torch.channels_last, torch.float32, 1)
    for args in [(x.half(), beta.half()), (x.double(), beta)]:  # another dtype; mixed dtypes
        torch.testing.assert_close(ops.lipswish_and_slope(*args), ops.lipswish_and_slope.eager(*args))


@needs_native
def test_operators_pass_torch_library_opcheck(operators):
    """Schema, fake (meta) implementation, and dispatch as torch.compile and torch.export see them."""
    maps, beta = _inputs((2, 5, 4, 4), (5, 1, 1), torch.channels_last, torch.float32, 3)
    for name, _, n_maps in OPERATORS:
        torch.library.opcheck(getattr(operators, name), (*maps[3 - n_maps :], beta))


@needs_native
def test_torch_compile_and_export_see_the_operators(operators):
    class Layer(torch.nn.Module):
        def forward(self, x, beta):
            out, slope = torch.ops.iresnet.lipswish_and_slope(x, beta)
            return out * slope

    (x,), beta = _inputs((2, 5, 4, 4), (5, 1, 1), torch.contiguous_format, torch.float32, 1)
    expected = Layer()(x, beta)
    compiled = torch.compile(Layer(), backend="aot_eager", fullgraph=True, dynamic=True)
    torch.testing.assert_close(compiled(x, beta), expected)
    exported = torch.export.export(Layer(), (x, beta))
    assert any("iresnet.lipswish_and_slope" in str(node.target) for node in exported.graph.nodes)
    torch.testing.assert_close(exported.module()(x, beta), expected)


@needs_native
def test_operators_run_in_torch_thread_pool(operators):
    """The per-channel sums merge per-thread partials: 1 and 2 threads agree to rounding."""
    (gg, grad, x), beta = _inputs((64, 32, 28, 28), (32, 1, 1), torch.channels_last, torch.float32, 3)
    threads = torch.get_num_threads()
    try:
        results = []
        for n in (1, 2):
            torch.set_num_threads(n)
            results.append(operators.lipswish_slope_grads(gg, grad, x, beta))
    finally:
        torch.set_num_threads(threads)
    for i in (0, 1):  # elementwise: identical
        torch.testing.assert_close(results[0][i], results[1][i], rtol=0, atol=0)
    torch.testing.assert_close(results[0][2], results[1][2], rtol=1e-6, atol=0)


def _run(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env={**os.environ, **env}
    )


def test_native_kernels_can_be_turned_off_and_a_failed_build_falls_back(tmp_path):
    code = """
        import warnings, torch
        from iresnet.lipschitz import LipSwish
        from iresnet.ops.extension import failures
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            act = LipSwish(3).double().train()
            x = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
            ok = torch.autograd.gradgradcheck(act, (x,)) and torch.autograd.gradgradcheck(act, (x,))
        print(ok, sorted(failures), hasattr(torch.ops.iresnet, "lipswish_and_slope"), [str(w.message) for w in caught])
    """
    off = _run(code, IRESNET_NATIVE="0")
    assert off.returncode == 0, off.stderr
    assert off.stdout.startswith("True ['lipswish'] False []")  # silent
    broken = _run(code, CXX=str(tmp_path / "no-such-compiler"), TORCH_EXTENSIONS_DIR=str(tmp_path / "ext"))
    assert broken.returncode == 0, broken.stderr
    assert broken.stdout.startswith("True ['lipswish'] False")
    assert broken.stdout.count("building its C++ kernels") == 1  # once, however often it is asked
    assert "Set IRESNET_NATIVE=0" in broken.stdout
