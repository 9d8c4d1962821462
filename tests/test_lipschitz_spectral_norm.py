"""Spectral normalization: bounds against dense SVD, buffers, modes, and argument errors."""

import copy

import pytest
import torch
from torch import nn

from iresnet.lipschitz import (
    ConvSpectralNorm,
    MatrixSpectralNorm,
    exact_spectral_norm,
    spectral_norm,
    spectral_norm_modules,
    top_right_singular_vector,
    update_spectral_norms,
)

COEFF = 0.9

# (layer factory, input_shape for the exact norm)
LAYERS = {
    "linear": (lambda: nn.Linear(12, 7), (12,)),
    "conv3x3": (lambda: nn.Conv2d(3, 4, 3, padding=1), (3, 6, 6)),
    "conv3x3_stride2": (lambda: nn.Conv2d(3, 4, 3, stride=2, padding=1), (3, 8, 8)),
    "conv3x3_stride2_odd": (lambda: nn.Conv2d(2, 3, 3, stride=2, padding=1), (2, 7, 7)),
    "conv4x4_stride2_dilated": (lambda: nn.Conv2d(2, 3, 4, stride=2, padding=2, dilation=2), (2, 9, 8)),
    "conv1x1": (lambda: nn.Conv2d(5, 3, 1), (5, 4, 4)),
}


def _normalized(kind: str, scale: float) -> tuple[nn.Module, tuple[int, ...]]:
    make, shape = LAYERS[kind]
    layer = make()
    with torch.no_grad():
        layer.weight.mul_(scale)
    spectral_norm(layer, coeff=COEFF)
    layer(torch.randn(2, *shape))  # a lazy conv learns its input size here
    return layer, shape


@pytest.mark.parametrize("kind", LAYERS)
def test_large_weight_is_rescaled_to_coeff(kind):
    torch.manual_seed(0)
    layer, shape = _normalized(kind, scale=10.0)
    result = update_spectral_norms(layer)[""]
    assert result.converged
    norm = exact_spectral_norm(layer, shape)
    assert norm <= COEFF * (1 + 1e-3)
    assert norm >= 0.99 * COEFF


@pytest.mark.parametrize("kind", LAYERS)
def test_small_weight_is_unchanged(kind):
    torch.manual_seed(0)
    make, shape = LAYERS[kind]
    raw = make()
    scale = 0.5 * COEFF / exact_spectral_norm(raw, shape)
    layer, _ = _normalized(kind, scale=1.0)
    with torch.no_grad():
        layer.parametrizations.weight.original.copy_(raw.weight * scale)
    update_spectral_norms(layer)
    layer.eval()
    torch.testing.assert_close(layer.weight, raw.weight * scale)


def test_conv_uses_operator_norm_not_reshaped_kernel():
    # A box filter: the reshaped (1, 9) kernel has norm 3, the convolution nearly 9.
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0)
    shape = (1, 8, 8)
    exact = exact_spectral_norm(conv, shape)
    reshaped = torch.linalg.matrix_norm(conv.weight.flatten(1), ord=2).item()
    assert reshaped == pytest.approx(3.0)
    assert exact > 2.5 * reshaped  # the reshaped norm is no bound

    spectral_norm(conv, coeff=COEFF, input_shape=shape)
    result = update_spectral_norms(conv)[""]
    assert result.sigma == pytest.approx(exact, rel=1e-3)
    assert exact_spectral_norm(conv, shape) <= COEFF * (1 + 1e-3)


def test_conv_adjoint_matches_operator():
    torch.manual_seed(0)
    conv = spectral_norm(nn.Conv2d(3, 5, 3, stride=2, padding=1, dilation=2), input_shape=(3, 9, 10))
    sn = conv.parametrizations.weight[0]
    weight = conv.parametrizations.weight.original.detach()
    v, u = torch.randn_like(sn._v), torch.randn_like(sn._u)
    lhs = (sn.operator(weight, v) * u).sum()
    rhs = (v * sn.adjoint(weight, u)).sum()
    torch.testing.assert_close(lhs, rhs)


def test_parametrization_kinds():
    assert isinstance(spectral_norm(nn.Linear(3, 2)).parametrizations.weight[0], MatrixSpectralNorm)
    assert isinstance(spectral_norm(nn.Conv2d(3, 2, 1)).parametrizations.weight[0], MatrixSpectralNorm)
    assert isinstance(spectral_norm(nn.Conv2d(3, 2, 3)).parametrizations.weight[0], ConvSpectralNorm)


def _buffers(module):
    names = ("_u", "_v", "_sigma")
    return {k: v.clone() for k, v in module.state_dict().items() if k.rsplit(".", 1)[-1] in names}


def test_state_dict_round_trip_into_lazy_conv():
    torch.manual_seed(0)
    source = nn.Sequential(spectral_norm(nn.Conv2d(3, 4, 3, padding=1)), spectral_norm(nn.Linear(4, 2)))
    source[0](torch.randn(1, 3, 5, 6))
    saved = source.state_dict()
    assert {f"0.parametrizations.weight.0.{name}" for name in ("_u", "_v", "_sigma")} <= set(saved)
    assert saved["0.parametrizations.weight.0._v"].shape == (1, 3, 5, 6)

    fresh = nn.Sequential(spectral_norm(nn.Conv2d(3, 4, 3, padding=1)), spectral_norm(nn.Linear(4, 2)))
    assert not fresh[0].parametrizations.weight[0].initialized
    fresh.load_state_dict(saved)
    for key, value in _buffers(source).items():
        torch.testing.assert_close(fresh.state_dict()[key], value)
    source.eval()
    fresh.eval()
    x = torch.randn(2, 3, 5, 6)
    torch.testing.assert_close(fresh[0](x), source[0](x))


def test_uninitialized_conv_explains_how_to_fix():
    conv = spectral_norm(nn.Conv2d(3, 4, 3))
    with pytest.raises(RuntimeError, match="input_shape"):
        conv.weight
    with pytest.raises(RuntimeError, match="input_shape"):
        update_spectral_norms(conv)


def test_larger_input_than_estimated_is_rejected():
    conv = spectral_norm(nn.Conv2d(3, 4, 3, padding=1), input_shape=(6, 6))
    conv(torch.randn(1, 3, 4, 6))  # smaller inputs are covered by the bound
    with pytest.raises(ValueError, match="up to"):
        conv(torch.randn(1, 3, 8, 6))


@pytest.mark.parametrize("kind", ["linear", "conv3x3"])
def test_training_updates_vectors_and_eval_does_not(kind):
    torch.manual_seed(0)
    layer, shape = _normalized(kind, scale=1.0)
    x = torch.randn(2, *shape)
    before = _buffers(layer)
    layer.eval()
    layer(x)
    for key, value in _buffers(layer).items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    layer.train()
    layer(x)
    after = _buffers(layer)
    assert any(not torch.equal(after[k], before[k]) for k in before if k.endswith("_u"))


def test_gradient_flows_through_weight_only():
    # d sigma / d W = u v^T (Miyato et al.): sigma = u^T W v with u, v held fixed.
    torch.manual_seed(0)
    linear = spectral_norm(nn.Linear(6, 4))
    sn = linear.parametrizations.weight[0]
    weight = linear.parametrizations.weight.original
    sn.eval()
    sigma = sn.estimate(weight)
    (grad,) = torch.autograd.grad(sigma, weight)
    torch.testing.assert_close(grad, torch.outer(sn._u, sn._v))
    assert not sn._u.requires_grad and not sn._v.requires_grad


def test_two_forwards_then_backward():
    torch.manual_seed(0)
    conv = spectral_norm(nn.Conv2d(2, 2, 3, padding=1))
    x = torch.randn(1, 2, 4, 4)
    loss = conv(x).sum() - conv(2 * x).sum()
    loss.backward()
    assert torch.isfinite(conv.parametrizations.weight.original.grad).all()


def test_spectral_norm_modules_lists_every_layer():
    model = nn.Sequential(
        spectral_norm(nn.Linear(3, 3)), nn.ReLU(), nn.Linear(3, 3), spectral_norm(nn.Conv2d(3, 3, 1))
    )
    assert [name for name, _, _ in spectral_norm_modules(model)] == ["0", "3"]


@pytest.mark.parametrize("coeff", [1.0, 1.5, 0.0, -0.5, float("nan")])
def test_bad_coeff(coeff):
    with pytest.raises(ValueError, match="coeff"):
        spectral_norm(nn.Linear(3, 3), coeff=coeff)


@pytest.mark.parametrize("n", [0, -1, 1.5])
def test_bad_n_power_iterations(n):
    with pytest.raises(ValueError, match="n_power_iterations"):
        spectral_norm(nn.Linear(3, 3), n_power_iterations=n)


@pytest.mark.parametrize(
    "module, error",
    [
        (nn.Conv1d(3, 3, 3), TypeError),
        (nn.ConvTranspose2d(3, 3, 3), TypeError),
        (nn.Conv2d(4, 4, 3, groups=2), ValueError),
        (nn.Conv2d(3, 3, 3, padding=1, padding_mode="circular"), ValueError),
    ],
)
def test_unsupported_layers(module, error):
    with pytest.raises(error, match="spectral_norm"):
        spectral_norm(module)


def test_registering_twice_is_rejected():
    layer = spectral_norm(nn.Linear(3, 3))
    with pytest.raises(ValueError, match="already"):
        spectral_norm(layer)


def test_eval_mode_is_pure_for_torch_func():
    # Brute-force log-determinants take torch.func Jacobians of a branch; eval mode must not write buffers.
    torch.manual_seed(0)
    conv = spectral_norm(nn.Conv2d(2, 2, 3, padding=1), input_shape=(2, 4, 4)).eval()
    x = torch.randn(2, 4, 4)
    jacobian = torch.func.jacrev(lambda z: conv(z.unsqueeze(0)).squeeze(0))(x)
    assert jacobian.shape == (2, 4, 4, 2, 4, 4)


def test_update_finds_sigma_where_power_iteration_stalls():
    """Random 3x3 convolutions have clustered top singular values: plain power iteration creeps
    (its estimate stays 1e-3 low after 100 steps here), the Lanczos update is exact to 1e-6, and
    the normalized layer's norm does not exceed coeff."""
    stalled = 0
    for seed in range(8):
        torch.manual_seed(seed)
        conv = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        with torch.no_grad():
            conv.weight.mul_(2.0)
        shape = (8, 8, 8)
        exact = exact_spectral_norm(conv, shape)
        spectral_norm(conv, coeff=COEFF, input_shape=shape)
        sn = conv.parametrizations.weight[0]
        probe = sn._u.clone(), sn._v.clone()
        sn.power_iteration(conv.parametrizations.weight.original, 100)
        stalled += (exact - sn.sigma.item()) / exact > 1e-4
        sn._u.copy_(probe[0])
        sn._v.copy_(probe[1])
        result = update_spectral_norms(conv, atol=0.0, rtol=1e-6)[""]
        assert result.converged
        assert result.sigma == pytest.approx(exact, rel=1e-6)
        conv.eval()
        assert exact_spectral_norm(conv, shape) <= COEFF * (1 + 1e-6)
    assert stalled >= 2  # the case is a hard one for power iteration


def test_top_right_singular_vector_of_any_operator_matches_dense_svd():
    """The Lanczos solver takes any ``A^T A`` product (here a matrix with a clustered top spectrum,
    as other code's layers have): the vector and the norm it gives against the dense SVD."""
    torch.manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(60, 40, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(40, 40, dtype=torch.float64))
    singular = torch.linspace(1.0, 0.2, 40, dtype=torch.float64)
    singular[:3] = torch.tensor([1.0, 0.999, 0.998])
    matrix = u @ torch.diag(singular) @ v.T
    top, products, converged = top_right_singular_vector(
        lambda x: matrix.T @ (matrix @ x), torch.randn(40, dtype=torch.float64), atol=0.0, rtol=1e-10
    )
    assert converged and products <= 500
    assert (matrix @ top).norm().item() == pytest.approx(1.0, rel=1e-9)
    assert abs(torch.dot(top, v[:, 0]).item()) == pytest.approx(1.0, abs=1e-6)
    capped, products, converged = top_right_singular_vector(
        lambda x: matrix.T @ (matrix @ x), torch.zeros(40, dtype=torch.float64), max_iter=3, lanczos_steps=3
    )
    assert (products, converged) == (3, False) and capped.norm().item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="max_iter must be >= 1"):
        top_right_singular_vector(lambda x: x, torch.ones(3), max_iter=0)


def test_operators_of_one_shape_are_solved_together():
    """``L`` operators in one call (``start: (L, n)``), each row against its own dense SVD, with a
    convergence flag per row; and update_spectral_norms, which groups a model's layers of one
    shape so, gives every layer its own exact norm, in the model's order."""
    torch.manual_seed(0)
    matrices = torch.randn(3, 30, 20, dtype=torch.float64) * torch.tensor([1.0, 5.0, 0.1]).view(3, 1, 1).double()
    top, products, converged = top_right_singular_vector(
        lambda x: torch.bmm(matrices.transpose(1, 2), torch.bmm(matrices, x.unsqueeze(2))).squeeze(2),
        torch.randn(3, 20, dtype=torch.float64), atol=0.0, rtol=1e-10,
    )
    assert top.shape == (3, 20) and converged.tolist() == [True] * 3 and products <= 500
    norms = torch.bmm(matrices, top.unsqueeze(2)).flatten(1).norm(dim=1)
    assert norms.tolist() == pytest.approx(torch.linalg.matrix_norm(matrices, ord=2).tolist(), rel=1e-9)

    shape = (3, 6, 6)
    raw = [nn.Conv2d(3, 3, 3, padding=1) for _ in range(3)] + [nn.Conv2d(3, 3, 3, stride=2, padding=1)]
    raw += [nn.Linear(12, 12) for _ in range(2)]
    with torch.no_grad():
        raw[1].weight.mul_(7.0)  # one shape, very different norms
    normalized = [spectral_norm(copy.deepcopy(layer), COEFF, input_shape=shape) for layer in raw]
    model = nn.ModuleList(normalized)  # a container: only its layers' norms matter here
    results = update_spectral_norms(model, atol=0.0, rtol=1e-8)
    assert list(results) == ["0", "1", "2", "3", "4", "5"]
    model.eval()
    for (name, result), layer, normalized_layer in zip(results.items(), raw, normalized):
        input_shape = shape if isinstance(layer, nn.Conv2d) else (12,)
        assert result.converged and result.sigma == pytest.approx(exact_spectral_norm(layer, input_shape), rel=1e-6)
        assert exact_spectral_norm(normalized_layer, input_shape) <= COEFF * (1 + 1e-6)


@pytest.mark.parametrize("steps", [5, 24])
def test_a_zero_weight_in_a_group_gets_sigma_zero(steps):
    """A layer whose Krylov space is exhausted at once (a zero weight, e.g. zero-initialized)
    beside a normal one of the same shape: sigma 0 and a unit vector, the other layer exact."""
    torch.manual_seed(0)
    raw = nn.Linear(6, 6)
    layers = nn.ModuleList([spectral_norm(nn.Linear(6, 6), COEFF), spectral_norm(copy.deepcopy(raw), COEFF)])
    with torch.no_grad():
        layers[0].parametrizations.weight.original.zero_()
    results = update_spectral_norms(layers, atol=0.0, rtol=1e-8, max_iter=steps, lanczos_steps=steps)
    assert results["0"].sigma == 0.0 and results["0"].converged
    assert layers[0].parametrizations.weight[0]._v.norm().item() == pytest.approx(1.0)
    assert results["1"].sigma == pytest.approx(exact_spectral_norm(raw, (6,)), rel=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_warm_krylov_refresh_tracks_a_moving_weight_better_than_power_iteration(dtype):
    # Training moves the weight a little every step; k Lanczos products from the last vectors
    # (what spectral_norm_lanczos_steps runs) against k power-iteration steps from the same
    # vectors, both against the dense SVD of the raw convolution operator after each move.
    torch.manual_seed(0)
    shape = (6, 8, 8)
    raw = nn.Conv2d(6, 6, 3, padding=1)
    krylov, power = (spectral_norm(copy.deepcopy(raw), COEFF, input_shape=shape) for _ in range(2))
    power.load_state_dict(krylov.state_dict())
    errors = {"krylov": [], "power": []}
    for _ in range(20):
        step = 0.01 * torch.randn_like(raw.weight)
        with torch.no_grad():
            for weight in (raw.weight, krylov.parametrizations.weight.original, power.parametrizations.weight.original):
                weight.add_(step)
        update_spectral_norms(krylov, max_iter=4, lanczos_steps=4, dtype=dtype)
        sn = power.parametrizations.weight[0]
        sn.power_iteration(power.parametrizations.weight.original, 4)
        exact = exact_spectral_norm(raw, shape)
        errors["krylov"].append(abs(krylov.parametrizations.weight[0].sigma.item() - exact) / exact)
        errors["power"].append(abs(sn.sigma.item() - exact) / exact)
        assert krylov.parametrizations.weight[0]._v.dtype == torch.float32  # buffers keep their dtype
    assert max(errors["krylov"][-10:]) < 2e-3  # it keeps up
    assert sum(errors["krylov"]) < 0.35 * sum(errors["power"])  # measured: 0.1-0.2
