"""Flow layers: every layer maps ``forward(x, context=None) -> (y, logdet)`` and ``inverse(y, context=None) -> x``."""

from iresnet.flows.actnorm import ActNorm
from iresnet.flows.base import Flow, FlowSequential, check_finite
from iresnet.flows.logit import Center, LogitTransform
from iresnet.flows.reshape import ChannelsLast, FactorOut, Flatten
from iresnet.flows.residual import ResidualBlock
from iresnet.flows.squeeze import Squeeze

__all__ = [
    "ActNorm",
    "Center",
    "ChannelsLast",
    "FactorOut",
    "Flatten",
    "Flow",
    "FlowSequential",
    "LogitTransform",
    "ResidualBlock",
    "Squeeze",
    "check_finite",
]
