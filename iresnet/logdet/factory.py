"""Build a log-determinant estimator from its name (e.g. from a config file)."""

from __future__ import annotations

from typing import Any

from iresnet.logdet.exact import ExactLogDet
from iresnet.logdet.power_series import PowerSeriesLogDet
from iresnet.logdet.roulette import RouletteLogDet

ESTIMATORS: dict[str, type] = {
    "exact": ExactLogDet,
    "series": PowerSeriesLogDet,
    "power_series": PowerSeriesLogDet,
    "roulette": RouletteLogDet,
}


def get_logdet_estimator(name: str, **kwargs: Any) -> ExactLogDet | PowerSeriesLogDet | RouletteLogDet:
    """The estimator called ``name`` (``exact``, ``series``/``power_series``, ``roulette``),
    constructed with ``kwargs``."""
    if name not in ESTIMATORS:
        raise ValueError(f"unknown log-determinant estimator {name!r}; valid names: {sorted(ESTIMATORS)}.")
    return ESTIMATORS[name](**kwargs)
