"""Inverse solvers of ``x + g(x) = y``: round trips, acceleration, stats, failure, validation."""

from __future__ import annotations

import pytest
import torch
from test_logdet_nets import contractive_mlp, tied_conv, tied_mlp

from iresnet.inverse import (
    AndersonInverse,
    FixedPointInverse,
    InverseConvergenceError,
    InverseConvergenceWarning,
    InverseStats,
)

NETS = {
    "mlp": (lambda coeff: tied_mlp(6, coeff), (32, 6)),
    "conv": (lambda coeff: tied_conv(2, 5, coeff), (8, 2, 5, 5)),
}


def _problem(net_name: str, coeff: float, dtype=torch.float64):
    make, shape = NETS[net_name]
    net = make(coeff).to(dtype)
    torch.manual_seed(1)
    x = torch.randn(shape, dtype=dtype)
    with torch.no_grad():
        y = x + net(x)
    return net, x, y


def _true_residual(net, x, y) -> float:
    with torch.no_grad():
        return (x + net(x) - y).abs().max().item()


@pytest.mark.parametrize("solver_cls", [FixedPointInverse, AndersonInverse])
@pytest.mark.parametrize("net_name", ["mlp", "conv"])
@pytest.mark.parametrize("coeff", [0.9, 0.98])
def test_round_trip(solver_cls, net_name, coeff):
    """Error <= residual / (1 - Lip), so the tolerance is set from the coefficient (float64)."""
    net, x, y = _problem(net_name, coeff)
    solver = solver_cls(atol=1e-6 * (1 - coeff), rtol=0.0, max_iter=2000)
    x_rec, stats = solver(net, y)
    assert (x_rec - x).abs().max() <= 1e-5
    assert stats.converged and solver.last_stats is stats
    assert stats.residual == pytest.approx(_true_residual(net, x_rec, y))
    assert stats.residual <= 1e-6 * (1 - coeff)
    assert stats.net_evals == stats.iterations + 1
    assert x_rec.shape == y.shape and x_rec.grad_fn is None


@pytest.mark.parametrize("solver_cls", [FixedPointInverse, AndersonInverse])
def test_default_tolerances_in_float32(solver_cls):
    """The error is bounded by ``residual / (1 - Lip)``."""
    net, x, y = _problem("mlp", 0.9, dtype=torch.float32)
    x_rec, stats = solver_cls()(net, y)
    assert stats.converged and stats.residual <= 1e-6 + 1e-6 * y.abs().max()
    assert (x_rec - x).abs().max() <= stats.residual / (1 - 0.9) + 1e-6


@pytest.mark.parametrize("solver_cls", [FixedPointInverse, AndersonInverse])
def test_tolerance_below_float32_rounding_stops_at_the_rounding_floor(solver_cls):
    """atol=1e-12 cannot be met in float32; the solver stops at ~eps * scale instead of failing."""
    net, x, y = _problem("mlp", 0.9, dtype=torch.float32)
    x_rec, stats = solver_cls(atol=1e-12, rtol=0.0, max_iter=500)(net, y)
    assert stats.converged and stats.iterations < 500
    eps = torch.finfo(torch.float32).eps
    assert stats.residual <= 4 * eps * (y.abs().max() + x_rec.abs().max())
    assert (x_rec - x).abs().max() <= stats.residual / (1 - 0.9) + 1e-6


@pytest.mark.parametrize("net_name", ["mlp", "conv"])
def test_anderson_needs_fewer_evaluations_at_coeff_098(net_name):
    net, _, y = _problem(net_name, 0.98)
    _, plain = FixedPointInverse(atol=1e-9, rtol=0.0, max_iter=2000)(net, y)
    _, anderson = AndersonInverse(atol=1e-9, rtol=0.0, max_iter=2000)(net, y)
    assert anderson.converged and anderson.net_evals < 0.5 * plain.net_evals


def _nan_weights(residuals, lam):
    solved = torch.ones(len(residuals), dtype=torch.bool)
    return torch.full(residuals.shape[:2], float("nan"), dtype=torch.float64), solved


def _wild_weights(residuals, lam):
    """Weights summing to one that extrapolate far outside the history."""
    batch, n = residuals.shape[:2]
    alpha = torch.tensor([10.0 * (-1) ** i for i in range(n)], dtype=torch.float64)
    alpha[-1] += 1.0 - alpha.sum()
    return alpha.expand(batch, n), torch.ones(batch, dtype=torch.bool)


@pytest.mark.parametrize("weights", [_nan_weights, _wild_weights])
def test_anderson_falls_back_to_plain_steps_when_its_step_fails(weights, monkeypatch):
    monkeypatch.setattr("iresnet.inverse.anderson._anderson_weights", weights)
    net, x, y = _problem("mlp", 0.9)
    x_rec, stats = AndersonInverse(atol=1e-8, rtol=0.0, max_iter=500)(net, y)
    _, plain = FixedPointInverse(atol=1e-8, rtol=0.0, max_iter=500)(net, y)
    assert stats.converged and (x_rec - x).abs().max() < 1e-6
    assert stats.net_evals <= 2 * plain.net_evals  # at worst every other step is a plain one


def test_fixed_point_starts_from_y_minus_g_of_y():
    net, _, y = _problem("mlp", 0.9)
    with pytest.warns(InverseConvergenceWarning):
        x_one, stats = FixedPointInverse(max_iter=1, on_failure="warn")(net, y)
    with torch.no_grad():
        torch.testing.assert_close(x_one, y - net(y))
    assert stats == InverseStats(iterations=1, net_evals=2, residual=stats.residual, converged=False)
    assert stats.residual == pytest.approx(_true_residual(net, x_one, y))


@pytest.mark.parametrize("solver_cls", [FixedPointInverse, AndersonInverse])
def test_converged_samples_are_frozen(solver_cls):
    """Samples converge at different iterations and are no longer passed to ``g``."""
    net, _, y = _problem("mlp", 0.9)
    y[0] *= 5.0  # a harder sample
    sizes = []

    def counting(x):
        sizes.append(x.shape[0])
        return net(x)

    _, stats = solver_cls(atol=1e-8, rtol=0.0, max_iter=500)(counting, y)
    assert stats.converged and len(sizes) == stats.net_evals
    assert sizes[0] == y.shape[0] and sizes[-1] < y.shape[0]
    assert sizes == sorted(sizes, reverse=True)


@pytest.mark.parametrize("solver_cls", [FixedPointInverse, AndersonInverse])
def test_failure_raises_with_residual_and_fix(solver_cls):
    net, _, y = _problem("conv", 0.98)
    solver = solver_cls(max_iter=3)
    with pytest.raises(InverseConvergenceError) as info:
        solver(net, y)
    message = str(info.value)
    residual = info.value.stats.residual
    assert f"{residual:.3g}" in message and "max_iter=3" in message
    assert "update_spectral_norms" in message and "coeff" in message
    assert not solver.last_stats.converged and solver.last_stats.iterations == 3
    assert residual > 1e-6


@pytest.mark.parametrize("solver_cls", [FixedPointInverse, AndersonInverse])
def test_failure_warns_and_returns_last_iterate(solver_cls):
    net, x, y = _problem("conv", 0.98)
    with pytest.warns(InverseConvergenceWarning, match="did not converge"):
        x_rec, stats = solver_cls(max_iter=3, on_failure="warn")(net, y)
    assert not stats.converged and stats.residual == pytest.approx(_true_residual(net, x_rec, y))
    assert (x_rec - x).abs().max() < (y - x).abs().max()


@pytest.mark.parametrize(
    "solver_cls, kwargs, match",
    [
        (FixedPointInverse, dict(max_iter=0), "max_iter must be an integer >= 1, got 0"),
        (FixedPointInverse, dict(atol=-1.0), "atol and rtol must be >= 0"),
        (FixedPointInverse, dict(on_failure="ignore"), "unknown on_failure 'ignore'"),
        (AndersonInverse, dict(m=0), "m .history size. must be an integer >= 1"),
        (AndersonInverse, dict(beta=0.0), r"beta must lie in \(0, 1\]"),
        (AndersonInverse, dict(lam=-1.0), "lam must be >= 0"),
    ],
)
def test_solvers_reject_bad_arguments(solver_cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        solver_cls(**kwargs)


def test_random_mlp_inverts_too():
    """A generic MLP (independent weights, ELU) as the residual branch."""
    net = contractive_mlp(4, 0.98).double()
    x = torch.randn(16, 4, dtype=torch.float64)
    with torch.no_grad():
        y = x + net(x)
    for solver in (FixedPointInverse(atol=1e-9, rtol=0.0), AndersonInverse(atol=1e-9, rtol=0.0)):
        x_rec, stats = solver(net, y)
        assert stats.converged and (x_rec - x).abs().max() < 1e-7


@pytest.mark.parametrize("solver_cls", [FixedPointInverse, AndersonInverse])
def test_solvers_evaluate_without_tf32_and_restore_the_callers_settings(solver_cls):
    """TF32 (torch's default for cuDNN convolutions on recent GPUs) rounds at 1e-3: a float32
    inverse to 1e-6 needs full precision while it iterates."""
    seen = []

    def fn(x):
        seen.append((torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision()))
        return 0.5 * torch.tanh(x)

    before = (torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision())
    torch.backends.cudnn.allow_tf32 = True
    torch.set_float32_matmul_precision("high")
    try:
        solver_cls()(fn, torch.randn(4, 3))
        assert seen and set(seen) == {(False, "highest")}
        assert (torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision()) == (True, "high")
    finally:
        torch.backends.cudnn.allow_tf32 = before[0]
        torch.set_float32_matmul_precision(before[1])
