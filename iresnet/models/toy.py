"""A flow for 2-D toy densities: fully connected residual blocks with exact log-determinants."""

from __future__ import annotations

from torch import Tensor

from iresnet.logdet import ExactLogDet
from iresnet.models.base import FlowModel
from iresnet.models.blocks import fc_branch, residual_stack
from iresnet.models.priors import get_prior


class ToyFlow(FlowModel):
    """``n_blocks`` MLP residual blocks on ``x: (B, dim)``; the exact logdet is cheap in 2-D.

    Args:
        logdet: defaults to :class:`ExactLogDet`; pass a series estimator to compare.
        actnorm: follow every block with ``ActNorm`` (off by default: toy data are already scaled).
    """

    def __init__(
        self,
        dim: int = 2,
        n_blocks: int = 10,
        hidden: int = 128,
        hidden_layers: int = 3,
        activation: str = "lipswish",
        coeff: float = 0.9,
        n_power_iterations: int = 1,
        logdet=None,
        inverse=None,
        actnorm: bool = False,
        prior: str = "normal",
    ) -> None:
        super().__init__()
        self.dim = dim
        logdet = logdet if logdet is not None else ExactLogDet()
        branches = [
            fc_branch(dim, hidden, hidden_layers, activation, coeff, n_power_iterations, preact=False)
            for _ in range(n_blocks)
        ]
        self.flow = residual_stack(branches, dim, logdet, inverse, actnorm)
        self.prior = get_prior(prior, dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x: (B, dim)`` -> ``z: (B, dim)``, ``logdet: (B,)``."""
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"ToyFlow expects points of shape (B, {self.dim}), got {tuple(x.shape)}.")
        return self.flow(x)

    def inverse(self, z: Tensor) -> Tensor:
        return self.flow.inverse(z)
