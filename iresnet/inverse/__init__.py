"""Iterative solvers of ``x + fn(x) = y`` (inverting residual blocks with ``Lip(fn) < 1``).

Each solver is called as ``solver(fn, y) -> (x, InverseStats)``.
"""

from iresnet.inverse.anderson import AndersonInverse
from iresnet.inverse.base import InverseSolver, full_float32_precision
from iresnet.inverse.fixed_point import FixedPointInverse
from iresnet.inverse.stats import InverseConvergenceError, InverseConvergenceWarning, InverseStats

__all__ = [
    "AndersonInverse",
    "FixedPointInverse",
    "InverseConvergenceError",
    "InverseConvergenceWarning",
    "InverseSolver",
    "InverseStats",
    "full_float32_precision",
]
