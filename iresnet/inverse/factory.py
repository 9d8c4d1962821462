"""Build an inverse solver from its name (e.g. from a config file)."""

from __future__ import annotations

from typing import Any

from iresnet.inverse.anderson import AndersonInverse
from iresnet.inverse.base import InverseSolver
from iresnet.inverse.fixed_point import FixedPointInverse

SOLVERS: dict[str, type[InverseSolver]] = {"fixed_point": FixedPointInverse, "anderson": AndersonInverse}


def get_inverse_solver(name: str, **kwargs: Any) -> InverseSolver:
    """The solver called ``name`` (``fixed_point`` or ``anderson``), constructed with ``kwargs``."""
    if name not in SOLVERS:
        raise ValueError(f"unknown inverse solver {name!r}; valid names: {sorted(SOLVERS)}.")
    return SOLVERS[name](**kwargs)
