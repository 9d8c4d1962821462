"""iresnet: invertible residual networks (i-ResNets, Residual Flows) as normalizing flows.

The public API in one place; each name lives in the room that owns its concept.
"""

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

__all__ = [
    "ActNorm", "AndersonInverse", "CLipSwish", "ChannelsLast", "ClassConditionalGaussian", "ConditionalGaussian",
    "ConditionalSequential", "ContextShift", "DiagonalGaussian", "ExactLogDet", "FactorOut", "FixedPointInverse",
    "Flatten", "Flow", "FlowModel", "FlowSequential", "InverseConvergenceError", "InverseStats", "LipSwish",
    "LipschitzDenseLayer", "LogitTransform", "PowerSeriesLogDet", "ResidualBlock", "ResidualFlow", "RouletteLogDet",
    "Squeeze", "StandardNormal", "ToyFlow", "bits_per_dim", "conv_singular_values_fft", "exact_logdet",
    "exact_spectral_norm", "get_activation", "lipschitz_report", "spectral_norm", "update_spectral_norms",
]  # fmt: skip
