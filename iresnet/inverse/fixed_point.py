"""Plain fixed-point (Banach) iteration ``x <- y - fn(x)``."""

from __future__ import annotations

from torch import Tensor

from iresnet.inverse.base import InverseSolver, SolverState


class FixedPointInverse(InverseSolver):
    """Solve ``x + fn(x) = y`` by ``x_0 = y - fn(y)``, ``x_{k+1} = y - fn(x_k)``.

    Converges linearly with rate ``Lip(fn)``: about ``log(tol) / log(Lip)`` iterations, so
    several hundred at ``Lip = 0.98``. See :class:`~iresnet.inverse.base.InverseSolver` for
    the stopping rule, freezing of converged samples, stats and failure handling.
    """

    def __init__(
        self, atol: float = 1e-7, rtol: float = 0.0, max_iter: int = 500, on_failure: str = "raise"
    ) -> None:
        super().__init__(atol, rtol, max_iter, on_failure)

    def _step(self, state: SolverState | None, x: Tensor, mapped: Tensor) -> Tensor:
        return mapped
