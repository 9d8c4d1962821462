"""iresnet: invertible residual networks (i-ResNets, Residual Flows) as normalizing flows.

The public API in one place; each name lives in the room that owns its concept. All are imported
plainly but ``pretrained``, which loads on first use (PEP 562): it imports Lightning (the shipped
models are training checkpoints), which would make every ``import iresnet`` several times slower.
"""

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from iresnet.flows import (
    ActNorm, ChannelsLast, FactorOut, Flatten, Flow, FlowSequential, LogitTransform, ResidualBlock, Squeeze,
)
from iresnet.inverse import AndersonInverse, FixedPointInverse, InverseConvergenceError, InverseStats
from iresnet.lipschitz import (
    CLipSwish, ConditionalSequential, ContextShift, LipschitzDenseLayer, LipSwish, conv_singular_values_fft,
    exact_spectral_norm, get_activation, lipschitz_report, spectral_norm, update_spectral_norms,
)
from iresnet.logdet import ExactLogDet, PowerSeriesLogDet, RouletteLogDet, exact_logdet
from iresnet.metrics import bits_per_dim
from iresnet.models import (
    ClassConditionalGaussian, ConditionalGaussian, DiagonalGaussian, FlowModel, ResidualFlow, StandardNormal, ToyFlow,
)

if TYPE_CHECKING:  # seen by type checkers and IDEs; loaded by __getattr__ at run time
    from iresnet.pretrained_models import pretrained

__all__ = [
    "ActNorm", "AndersonInverse", "CLipSwish", "ChannelsLast", "ClassConditionalGaussian", "ConditionalGaussian",
    "ConditionalSequential", "ContextShift", "DiagonalGaussian", "ExactLogDet", "FactorOut", "FixedPointInverse",
    "Flatten", "Flow", "FlowModel", "FlowSequential", "InverseConvergenceError", "InverseStats", "LipSwish",
    "LipschitzDenseLayer", "LogitTransform", "PowerSeriesLogDet", "ResidualBlock", "ResidualFlow", "RouletteLogDet",
    "Squeeze", "StandardNormal", "ToyFlow", "bits_per_dim", "conv_singular_values_fft", "exact_logdet",
    "exact_spectral_norm", "get_activation", "lipschitz_report", "pretrained", "spectral_norm", "update_spectral_norms",
]  # fmt: skip


def __getattr__(name: str) -> Any:
    if name == "pretrained":
        from iresnet.pretrained_models import pretrained

        return pretrained
    raise AttributeError(f"module 'iresnet' has no attribute {name!r}")
