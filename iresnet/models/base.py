"""A density model: a flow ``x -> z`` plus a prior on ``z``."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from iresnet.flows import Flow, ResidualBlock
from iresnet.inverse import full_float32_precision


class FlowModel(Flow):
    """``log p(x) = log p_Z(f(x)) + log |det df/dx|``; sampling inverts prior draws.

    Subclasses implement ``forward(x) -> (z: (B, D), logdet: (B,))`` and ``inverse(z) -> x``
    and set ``self.prior``.
    """

    prior: nn.Module

    def log_prob(self, x: Tensor) -> Tensor:
        """``x: (B, ...)`` -> ``log p(x): (B,)``."""
        return self.log_prob_and_logdet(x)[0]

    def log_prob_and_logdet(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``log p(x)`` and the flow's ``log |det df/dx|`` that it includes, both ``(B,)``."""
        z, logdet = self(x)
        return self.prior.log_prob(z) + logdet, logdet

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
        """Draws ``n`` samples; ``temperature`` scales the prior's standard deviation."""
        return self.inverse(self.prior.sample(n, temperature, generator=generator))

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """``inverse(forward(x))``, the invertibility check, with float64 iterates.

        The code is computed in the model's precision, without TF32 (as the inverse runs: a
        TF32 forward pass alone differs by ~1e-4 in image space); the inverse keeps its iterates
        in float64 while the residual branches run in the weights' dtype, which removes the
        float32 rounding floor of the fixed-point residual (about 1e-4 in image space for a
        trained MNIST flow, about 1e-6 this way).
        """
        with full_float32_precision():
            z, _ = self(x)
        return self.inverse(z.double()).to(x.dtype)

    def residual_blocks(self) -> list[ResidualBlock]:
        return [m for m in self.modules() if isinstance(m, ResidualBlock)]

    def set_logdet_estimator(self, estimator) -> None:
        """Swaps every block's log-det estimator, e.g. an unbiased one for evaluation."""
        for block in self.residual_blocks():
            block.logdet = estimator

    def set_inverse_solver(self, solver) -> None:
        for block in self.residual_blocks():
            block.solver = solver
