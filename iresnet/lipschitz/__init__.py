"""Lipschitz constraints for residual branches: spectral normalization, exact checks, activations.

i-ResNets (Behrmann et al. 2019) are invertible when every residual branch ``g`` has
``Lip(g) < 1``; this room bounds each linear layer by spectral normalization and uses
1-Lipschitz activations, so ``Lip(g) <= prod_i coeff_i``.
"""

from iresnet.lipschitz.activations import (
    CLipSwish,
    LipSwish,
    activation_channel_multiplier,
    get_activation,
)
from iresnet.lipschitz.circular import circular_conv_spectral_norm, conv_singular_values_fft
from iresnet.lipschitz.conditional import ConditionalSequential, ContextShift, needs_context, takes_context
from iresnet.lipschitz.dense import LipschitzDenseLayer
from iresnet.lipschitz.exact import exact_spectral_norm
from iresnet.lipschitz.parametrization import ConvSpectralNorm, MatrixSpectralNorm, SpectralNorm
from iresnet.lipschitz.report import BranchBound, LayerLipschitz, LipschitzReport, lipschitz_report, unnormalized_layers
from iresnet.lipschitz.spectral_norm import spectral_norm, spectral_norm_modules
from iresnet.lipschitz.update import PowerIterationResult, top_right_singular_vector, update_spectral_norms

__all__ = [
    "BranchBound",
    "CLipSwish",
    "ConditionalSequential",
    "ContextShift",
    "ConvSpectralNorm",
    "LayerLipschitz",
    "LipSwish",
    "LipschitzDenseLayer",
    "LipschitzReport",
    "MatrixSpectralNorm",
    "PowerIterationResult",
    "SpectralNorm",
    "activation_channel_multiplier",
    "circular_conv_spectral_norm",
    "conv_singular_values_fft",
    "exact_spectral_norm",
    "get_activation",
    "lipschitz_report",
    "needs_context",
    "spectral_norm",
    "spectral_norm_modules",
    "takes_context",
    "top_right_singular_vector",
    "unnormalized_layers",
    "update_spectral_norms",
]
