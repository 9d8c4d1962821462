"""Anderson acceleration of the fixed-point map ``G(x) = y - fn(x)``, per sample.

With the last ``n <= m`` iterates ``X_i`` and values ``F_i = G(X_i)`` (residuals
``R_i = F_i - X_i``), each sample solves the small constrained least-squares problem

    alpha = argmin ||sum_i alpha_i R_i||^2 + lam' ||alpha||^2   s.t.  sum_i alpha_i = 1,

via the bordered ``(n+1) x (n+1)`` system ``[[0, 1^T], [1, H]] [nu; alpha] = [1; 0]`` with
``H = R R^T + lam' I`` and ``lam' = lam * mean_i ||R_i||^2`` (relative, so the
regularisation does not swamp ``H`` as residuals shrink). The next iterate is
``sum_i alpha_i (beta F_i + (1 - beta) X_i)``.

Safeguard: a sample whose residual norm did not improve on its best so far, or whose
Anderson point is not finite, takes a plain fixed-point step from its best iterate instead;
since ``G`` contracts, that step always improves the residual.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from iresnet.inverse.base import InverseSolver, is_int_at_least, require


@dataclass
class _History:
    """Ring buffers ``xs, gs: (b, m, D)`` of iterates and ``G`` values, ``count`` entries pushed,
    and each sample's best residual norm ``best_norm: (b,)`` with ``G`` there, ``best_g: (b, D)``."""

    xs: Tensor
    gs: Tensor
    count: int
    best_norm: Tensor
    best_g: Tensor

    def select(self, keep: Tensor) -> _History:
        return _History(self.xs[keep], self.gs[keep], self.count, self.best_norm[keep], self.best_g[keep])


def _anderson_weights(residuals: Tensor, lam: float) -> tuple[Tensor, Tensor]:
    """Weights ``alpha: (b, n)`` from ``residuals: (b, n, D)``, in float64; and which solves succeeded."""
    r = residuals.double()
    n = r.shape[1]
    gram = r @ r.transpose(1, 2)
    reg = lam * gram.diagonal(dim1=1, dim2=2).mean(1)
    system = torch.zeros(r.shape[0], n + 1, n + 1, dtype=r.dtype, device=r.device)
    system[:, 0, 1:] = 1.0
    system[:, 1:, 0] = 1.0
    system[:, 1:, 1:] = gram + reg[:, None, None] * torch.eye(n, dtype=r.dtype, device=r.device)
    rhs = torch.zeros(r.shape[0], n + 1, 1, dtype=r.dtype, device=r.device)
    rhs[:, 0] = 1.0
    solution, info = torch.linalg.solve_ex(system, rhs)
    return solution[:, 1:, 0], info == 0


class AndersonInverse(InverseSolver):
    """Solve ``x + fn(x) = y`` with safeguarded Anderson acceleration (memory ``m``, mixing ``beta``).

    Needs far fewer ``fn`` evaluations than :class:`~iresnet.inverse.FixedPointInverse` when
    ``Lip(fn)`` is close to 1. See :class:`~iresnet.inverse.base.InverseSolver` for the
    stopping rule, freezing of converged samples, stats and failure handling.
    """

    def __init__(
        self,
        m: int = 5,
        beta: float = 1.0,
        lam: float = 1e-4,
        atol: float = 1e-7,
        rtol: float = 0.0,
        max_iter: int = 500,
        on_failure: str = "raise",
    ) -> None:
        super().__init__(atol, rtol, max_iter, on_failure)
        require(
            is_int_at_least(m, 1),
            f"m (history size) must be an integer >= 1, got {m!r}; pass e.g. m=5.",
        )
        require(0.0 < beta <= 1.0, f"beta must lie in (0, 1], got {beta!r}; pass e.g. beta=1.0.")
        require(lam >= 0.0, f"lam must be >= 0, got {lam!r}; pass e.g. lam=1e-4.")
        self.m, self.beta, self.lam = m, beta, lam

    def _start(self, x: Tensor) -> _History:
        b, d = x.shape
        inf = torch.full((b,), float("inf"), dtype=x.dtype, device=x.device)
        return _History(x.new_zeros(b, self.m, d), x.new_zeros(b, self.m, d), 0, inf, x.clone())

    def _step(self, state: _History, x: Tensor, mapped: Tensor) -> Tensor:
        slot = state.count % self.m
        state.xs[:, slot], state.gs[:, slot] = x, mapped
        state.count += 1
        norm = (mapped - x).norm(dim=1)
        improved = norm < state.best_norm
        state.best_norm = torch.where(improved, norm, state.best_norm)
        state.best_g = torch.where(improved[:, None], mapped, state.best_g)

        n = min(state.count, self.m)
        xs, gs = state.xs[:, :n], state.gs[:, :n]
        alpha, solved = _anderson_weights(gs - xs, self.lam)
        alpha = alpha.to(x.dtype).unsqueeze(1)
        mixed = (alpha @ (self.beta * gs + (1.0 - self.beta) * xs)).squeeze(1)
        accept = improved & solved & torch.isfinite(mixed).all(1)
        return torch.where(accept[:, None], mixed, state.best_g)

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, m={self.m!r}, beta={self.beta!r}, lam={self.lam!r})"
