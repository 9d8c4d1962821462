"""Flow layers: every layer maps ``forward(x) -> (y, logdet)`` and ``inverse(y) -> x``."""

from iresnet.flows.actnorm import ActNorm
from iresnet.flows.base import Flow, FlowSequential, check_finite
from iresnet.flows.logit import LogitTransform
from iresnet.flows.residual import ResidualBlock
from iresnet.flows.squeeze import Squeeze

__all__ = ["ActNorm", "Flow", "FlowSequential", "LogitTransform", "ResidualBlock", "Squeeze", "check_finite"]
