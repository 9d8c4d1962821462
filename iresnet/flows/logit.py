"""The logit transform that maps images in [0, 1] to the real line."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from iresnet.flows.base import Flow


class LogitTransform(Flow):
    """``y = logit(alpha + (1 - 2 alpha) x)`` for ``x`` in [0, 1] (RealNVP).

    ``alpha`` keeps the logit away from the infinities at 0 and 1. With ``s = alpha + (1-2alpha)x``,

        log |dy/dx| = log(1 - 2 alpha) - log s - log(1 - s), summed over all dimensions.

    Shapes: ``x: (B, ...)``; ``logdet: (B,)``.
    """

    def __init__(self, alpha: float = 1e-6) -> None:
        super().__init__()
        if not 0 <= alpha < 0.5:
            raise ValueError(f"LogitTransform alpha must lie in [0, 0.5), got {alpha}.")
        self.alpha = alpha

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        s = self.alpha + (1 - 2 * self.alpha) * x
        y = torch.log(s) - torch.log1p(-s)
        # log s + log(1-s) = -softplus(-y) - softplus(y), stable for large |y|.
        log_jac = math.log(1 - 2 * self.alpha) + F.softplus(-y) + F.softplus(y)
        return y, log_jac.flatten(1).sum(1)

    def inverse(self, y: Tensor) -> Tensor:
        return (torch.sigmoid(y) - self.alpha) / (1 - 2 * self.alpha)
