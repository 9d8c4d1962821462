"""The shared loop of the iterative inverse solvers for ``x + fn(x) = y``.

Solving means finding the fixed point of ``G(x) = y - fn(x)``, a contraction when
``Lip(fn) < 1``. Every iteration evaluates ``G`` at the current iterate of the samples
still running, which gives their true residual ``r = G(x) - x = y - x - fn(x)``; samples
with ``max|r_b| <= max(atol + rtol max|x_b|, floor_b)`` are frozen (their ``fn`` is no longer evaluated),
the others move to the point proposed by the subclass. ``fn`` must therefore treat samples
independently (any sub-batch is a valid input).

A tolerance below the rounding error of computing ``r`` can never be met. So a sample also
stops once its residual is within ``floor_b = 4 eps (max|y_b| + max|x_b|)`` (``eps`` the
precision ``fn`` runs in: 1.2e-7 in float32) and has not improved for ``PATIENCE`` iterations:
it has reached the best accuracy the arithmetic allows. Iterates may be kept in a wider dtype
than ``fn`` computes in (float64 ``y`` for a float32 network); the floor then only bounds
where stalling is accepted, and the iteration goes on as long as it still improves.

With ``atol = rtol = 0`` there is no stopping rule: every sample takes exactly ``max_iter``
steps and nothing is read back from the device, so ``torch.compile`` and ``torch.export``
capture the solve as a fixed loop (no data-dependent control flow, no convergence error).
"""

from __future__ import annotations

import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

import torch
from torch import Tensor

from iresnet.inverse.stats import InverseConvergenceError, InverseConvergenceWarning, InverseStats

ON_FAILURE = ("raise", "warn")
# Iterations without a new best residual after which a sample at the rounding floor stops.
PATIENCE = 3


class SolverState(Protocol):
    """Per-sample solver memory; ``select`` keeps the rows of the samples still iterating."""

    def select(self, keep: Tensor) -> SolverState: ...


@contextmanager
def full_float32_precision() -> Iterator[None]:
    """Convolutions and matrix products in full float32 inside, not TF32.

    torch runs cuDNN convolutions in TF32 by default on recent GPUs (and matrix products where
    ``torch.set_float32_matmul_precision`` allows it): 10 mantissa bits, a relative error near
    1e-3, far above the residuals a float32 inverse reaches (1e-6), so the iteration would stall
    above its tolerance. Restores the caller's settings on exit.
    """
    cudnn_tf32, matmul_precision = torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision()
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = cudnn_tf32
        torch.set_float32_matmul_precision(matmul_precision)


def require(ok: bool, message: str) -> None:
    """Raise ``ValueError(message)`` (which names the bad value and the fix) unless ``ok``."""
    if not ok:
        raise ValueError(message)


def is_int_at_least(value: object, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


class InverseSolver(ABC):
    """Callable ``solver(fn, y) -> (x, InverseStats)`` solving ``x + fn(x) = y`` for ``y: (B, ...)``;
    with ``context=c`` (one row per sample), ``x + fn(x, c) = y``.

    Runs without an autograd graph and without TF32 (:func:`full_float32_precision`). If some
    sample has not converged after ``max_iter`` iterations it raises
    :class:`InverseConvergenceError` (``on_failure="raise"``) or warns with
    :class:`InverseConvergenceWarning` and returns the last iterates (``"warn"``).
    ``last_stats`` holds the stats of the latest call (also when it raised). With
    ``atol = rtol = 0`` it takes exactly ``max_iter`` steps (:attr:`fixed_iterations`).
    """

    def __init__(self, atol: float, rtol: float, max_iter: int, on_failure: str) -> None:
        require(
            atol >= 0 and rtol >= 0,
            f"atol and rtol must be >= 0, got atol={atol!r}, rtol={rtol!r}; pass e.g. atol=1e-7, rtol=0 "
            "(or both 0 for exactly max_iter iterations).",
        )
        require(
            is_int_at_least(max_iter, 1),
            f"max_iter must be an integer >= 1, got {max_iter!r}; pass e.g. max_iter=200.",
        )
        require(
            on_failure in ON_FAILURE,
            f"unknown on_failure {on_failure!r}; use one of {ON_FAILURE}.",
        )
        self.atol, self.rtol, self.max_iter, self.on_failure = atol, rtol, max_iter, on_failure
        self.last_stats: InverseStats | None = None

    def _start(self, x: Tensor) -> SolverState | None:
        """Fresh solver memory for the iterates ``x: (B, D)``."""
        return None

    @abstractmethod
    def _step(self, state: SolverState | None, x: Tensor, mapped: Tensor) -> Tensor:
        """The next iterates of the running samples from ``x`` and ``mapped = G(x)``, both ``(b, D)``."""

    def __call__(
        self, fn: Callable[..., Tensor], y: Tensor, eps: float | None = None, context: Tensor | None = None
    ) -> tuple[Tensor, InverseStats]:
        """Solves ``x + fn(x) = y`` (``x + fn(x, context) = y`` with a context); ``eps`` is the
        precision ``fn`` computes in (default: ``y``'s)."""
        if self.fixed_iterations:
            with torch.no_grad(), full_float32_precision():
                x = self._iterate(fn, y, context)
            # Nothing is read back from the device, so there is no residual to report.
            stats = InverseStats(iterations=self.max_iter, net_evals=self.max_iter, residual=math.nan, converged=False)
            self.last_stats = stats
            return x, stats
        with torch.no_grad(), full_float32_precision():
            eps = torch.finfo(y.dtype).eps if eps is None else eps
            x, stats, n_running = self._solve(fn, y, eps, context)
        self.last_stats = stats
        if not stats.converged:
            self._fail(stats, n_running, y.shape[0])
        return x, stats

    @property
    def fixed_iterations(self) -> bool:
        """``atol = rtol = 0``: exactly ``max_iter`` iterations on every sample, no stopping rule."""
        return self.atol == 0 and self.rtol == 0

    def _iterate(self, fn: Callable[..., Tensor], y: Tensor, context: Tensor | None) -> Tensor:
        """``max_iter`` steps from ``x_0 = y`` on the whole batch: a loop with no data-dependent
        control flow (``torch.compile`` and ``torch.export`` capture it unrolled)."""
        sample_shape, y_flat = y.shape[1:], y.flatten(1)
        x = y_flat
        state = self._start(x)
        for _ in range(self.max_iter):
            gx = fn(x.view(-1, *sample_shape)) if context is None else fn(x.view(-1, *sample_shape), context)
            x = self._step(state, x, y_flat - gx.flatten(1))
        return x.view_as(y)

    def _solve(
        self, fn: Callable[..., Tensor], y: Tensor, eps: float, context: Tensor | None
    ) -> tuple[Tensor, InverseStats, int]:
        """The iterates, their stats, and how many samples had not converged. The context rows
        follow the samples still running."""
        sample_shape, y_flat = y.shape[1:], y.flatten(1)
        out, residual = y_flat.clone(), torch.zeros(y.shape[0], dtype=y.dtype, device=y.device)
        running = torch.arange(y.shape[0], device=y.device)
        x, state = y_flat.clone(), self._start(y_flat)
        y_scale = y_flat.abs().amax(1)
        best = torch.full_like(y_scale, float("inf"))
        stalled = torch.zeros_like(y_scale, dtype=torch.long)
        for iteration in range(self.max_iter + 1):
            gx = fn(x.view(-1, *sample_shape)) if context is None else fn(x.view(-1, *sample_shape), context[running])
            mapped = y_flat[running] - gx.flatten(1)
            res = (mapped - x).abs().amax(1)
            out[running], residual[running] = x, res
            x_scale = x.abs().amax(1)
            stalled = torch.where(res < best, 0, stalled + 1)
            best = torch.minimum(best, res)
            at_floor = (res <= 4 * eps * (y_scale[running] + x_scale)) & (stalled >= PATIENCE)
            keep = (res > self.atol + self.rtol * x_scale) & ~at_floor
            if not keep.any() or iteration == self.max_iter:
                break
            running, x, mapped = running[keep], x[keep], mapped[keep]
            best, stalled = best[keep], stalled[keep]
            state = state.select(keep) if state is not None else None
            x = self._step(state, x, mapped)
        n_running = int(keep.sum())
        stats = InverseStats(
            iterations=iteration,
            net_evals=iteration + 1,
            residual=float(residual.max()) if residual.numel() else 0.0,
            converged=n_running == 0,
        )
        return out.view_as(y), stats, n_running

    def _fail(self, stats: InverseStats, n_running: int, batch: int) -> None:
        message = (
            f"{type(self).__name__} did not converge: max residual |x + g(x) - y| = "
            f"{stats.residual:.3g} after max_iter={self.max_iter} iterations "
            f"({n_running}/{batch} samples above atol={self.atol:g} + rtol={self.rtol:g}*max|x|). "
            "Increase max_iter, call iresnet.update_spectral_norms(model) so the Lipschitz bound "
            "Lip(g) < 1 holds, or lower the Lipschitz coefficient (coeff)."
        )
        if self.on_failure == "raise":
            raise InverseConvergenceError(message, stats)
        warnings.warn(message, InverseConvergenceWarning, stacklevel=3)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(atol={self.atol!r}, rtol={self.rtol!r}, "
            f"max_iter={self.max_iter!r}, on_failure={self.on_failure!r})"
        )
