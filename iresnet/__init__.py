"""iresnet: invertible residual networks (i-ResNets, Residual Flows) as normalizing flows.

The public API in one place; each name lives in the room that owns its concept. Names load on
first use (PEP 562), so that ``import iresnet.cli.launch`` stays light: the command-line
launcher picks the process's environment before torch is imported (:mod:`iresnet.cli.launch`).
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

__version__ = "0.1.0"

# Each public name and the room it lives in.
_ROOMS = {
    "iresnet.flows": (
        "ActNorm", "ChannelsLast", "FactorOut", "Flatten", "Flow", "FlowSequential", "LogitTransform",
        "ResidualBlock", "Squeeze",
    ),
    "iresnet.inverse": ("AndersonInverse", "FixedPointInverse", "InverseConvergenceError", "InverseStats"),
    "iresnet.lipschitz": (
        "CLipSwish", "ConditionalSequential", "ContextShift", "LipschitzDenseLayer", "LipSwish",
        "conv_singular_values_fft", "exact_spectral_norm", "get_activation", "lipschitz_report", "spectral_norm",
        "update_spectral_norms",
    ),
    "iresnet.logdet": ("ExactLogDet", "PowerSeriesLogDet", "RouletteLogDet", "exact_logdet"),
    "iresnet.metrics": ("bits_per_dim",),
    "iresnet.models": (
        "ClassConditionalGaussian", "ConditionalGaussian", "DiagonalGaussian", "FlowModel", "ResidualFlow",
        "StandardNormal", "ToyFlow",
    ),
    "iresnet.pretrained_models": ("pretrained",),
}  # fmt: skip
_ROOM_OF = {name: room for room, names in _ROOMS.items() for name in names}

__all__ = sorted(_ROOM_OF)


def __getattr__(name: str) -> Any:
    room = _ROOM_OF.get(name)
    if room is None:
        # A room read as an attribute (``iresnet.flows``) before anything imported it.
        if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
            return importlib.import_module(f"{__name__}.{name}")
        raise AttributeError(f"module 'iresnet' has no attribute {name!r}")
    value = getattr(importlib.import_module(room), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
