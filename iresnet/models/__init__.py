"""Density models: ``FlowModel(flow, prior)``, the presets built from it, and priors."""

from iresnet.models.base import FlowModel
from iresnet.models.dequantization import VariationalDequantizer
from iresnet.models.export import export_model
from iresnet.models.onnx import export_onnx
from iresnet.models.priors import (
    ClassConditionalGaussian, ConditionalGaussian, DiagonalGaussian, DistributionPrior, StandardNormal,
)  # fmt: skip
from iresnet.models.residual_flow import ResidualFlow, ScaleClassifier
from iresnet.models.toy import ToyFlow

__all__ = [
    "ClassConditionalGaussian",
    "ConditionalGaussian",
    "DiagonalGaussian",
    "DistributionPrior",
    "FlowModel",
    "ResidualFlow",
    "ScaleClassifier",
    "StandardNormal",
    "ToyFlow",
    "VariationalDequantizer",
    "export_model",
    "export_onnx",
]
