"""The logit transform that maps images in [0, 1] to the real line."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from iresnet.flows.base import Flow


def check_unit_interval(x: Tensor) -> None:
    """``ValueError`` unless every value of ``x`` is finite and in [0, 1] (images scaled by 255).

    Skipped while ``torch.compile`` or ``torch.export`` traces (the check reads ``x`` on the host).
    """
    if torch.compiler.is_compiling():
        return
    if not torch.isfinite(x).all():
        raise ValueError("Input images contain NaN or Inf pixels; clean the data before the model.")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise ValueError(
            f"Input pixels must lie in [0, 1], got range [{float(x.min()):.3g}, {float(x.max()):.3g}]; "
            "divide 0..255 images by 255 (the data modules do this and dequantize)."
        )


class LogitTransform(Flow):
    """``y = logit(alpha + (1 - 2 alpha) x)`` for ``x`` in [0, 1] (RealNVP).

    ``alpha`` keeps the logit away from the infinities at 0 and 1. With ``s = alpha + (1-2alpha)x``,

        log |dy/dx| = log(1 - 2 alpha) - log s - log(1 - s), summed over all dimensions.

    Shapes: ``x: (B, ...)``; ``logdet: (B,)``. The context is ignored. ``x`` must be finite and in
    [0, 1]: anything else raises a ``ValueError`` saying how to fix the data.
    """

    def __init__(self, alpha: float = 1e-6) -> None:
        super().__init__()
        if not 0 <= alpha < 0.5:
            raise ValueError(f"LogitTransform alpha must lie in [0, 0.5), got {alpha}.")
        self.alpha = alpha

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_unit_interval(x)
        s = self.alpha + (1 - 2 * self.alpha) * x
        y = torch.log(s) - torch.log1p(-s)
        # log s + log(1-s) = -softplus(-y) - softplus(y), stable for large |y|.
        log_jac = math.log(1 - 2 * self.alpha) + F.softplus(-y) + F.softplus(y)
        return y, log_jac.flatten(1).sum(1)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> Tensor:
        return (torch.sigmoid(y) - self.alpha) / (1 - 2 * self.alpha)


class Center(Flow):
    """``y = x - 0.5`` for ``x`` in [0, 1]: i-ResNet's preprocessing instead of a logit; logdet 0.

    Shapes: ``x: (B, ...)``; ``logdet: (B,)``. The context is ignored; ``x`` is checked as by
    :class:`LogitTransform`.
    """

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_unit_interval(x)
        return x - 0.5, x.new_zeros(x.shape[0])

    def inverse(self, y: Tensor, context: Tensor | None = None) -> Tensor:
        return y + 0.5
