"""Density models: the multi-scale image flow, the 2-D toy flow, and priors."""

from iresnet.models.base import FlowModel
from iresnet.models.priors import DiagonalGaussian, StandardNormal, get_prior
from iresnet.models.residual_flow import ResidualFlow
from iresnet.models.toy import ToyFlow

__all__ = ["DiagonalGaussian", "FlowModel", "ResidualFlow", "StandardNormal", "ToyFlow", "get_prior"]
