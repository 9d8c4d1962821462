"""What an inverse solve reports, and how it fails."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class InverseStats:
    """Outcome of solving ``x + fn(x) = y`` for a batch.

    Attributes:
        iterations: updates of the iterate taken (the first one is ``y -> y - fn(y)``).
        net_evals: calls of ``fn`` (on the samples still iterating); ``iterations + 1``,
            since the returned iterate's residual is evaluated too.
        residual: the true residual of the returned ``x``: ``max |x + fn(x) - y|`` over all
            entries of the batch (not a step size).
        converged: whether every sample met ``max|x_b + fn(x_b) - y_b| <= atol + rtol max|x_b|``.

    A fixed-iteration solve (``atol = rtol = 0``) measures nothing: ``residual`` is NaN and
    ``converged`` False; ``FlowModel.reconstruct`` shows how close its inverse is.
    """

    iterations: int
    net_evals: int
    residual: float
    converged: bool


class InverseConvergenceError(RuntimeError):
    """The solver hit ``max_iter`` before every sample converged; ``stats`` has the details."""

    def __init__(self, message: str, stats: InverseStats) -> None:
        super().__init__(message)
        self.stats = stats


class InverseConvergenceWarning(RuntimeWarning):
    """Issued instead of :class:`InverseConvergenceError` when ``on_failure="warn"``."""
