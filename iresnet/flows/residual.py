"""The invertible residual block ``y = x + g(x)`` with ``Lip(g) < 1``."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from iresnet.flows.base import Flow, check_finite
from iresnet.inverse import FixedPointInverse, InverseStats
from iresnet.logdet import RouletteLogDet


class ResidualBlock(Flow):
    """Invertible residual block ``y = x + net(x)`` (Behrmann et al. 2019).

    ``net`` must be contractive (``Lip(net) < 1``, e.g. built from spectrally normalized layers
    and 1-Lipschitz activations); then the map is a bijection (Banach fixed point) and

        log det(I + J_net(x)) = sum_{k>=1} (-1)^(k+1) tr(J_net(x)^k) / k,

    which ``logdet`` estimates. ``inverse`` solves ``x + net(x) = y``.

    Args:
        net: the residual branch ``g``; maps ``x: (B, ...)`` to the same shape.
        logdet: a log-determinant estimator ``(net, x, training) -> (g(x), logdet)``;
            defaults to the Residual Flows estimator (Russian roulette, Neumann gradient).
        inverse: an inverse solver ``(net, y) -> (x, InverseStats)``; defaults to
            :class:`FixedPointInverse`.
    """

    def __init__(self, net: nn.Module, logdet=None, inverse=None) -> None:
        super().__init__()
        self.net = net
        self.logdet = logdet if logdet is not None else RouletteLogDet()
        self.solver = inverse if inverse is not None else FixedPointInverse()
        self.last_inverse_stats: InverseStats | None = None

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        check_finite(x, "ResidualBlock.forward")
        gx, logdet = self.logdet(self.net, x, training=self.training)
        return x + gx, logdet

    def inverse(self, y: Tensor) -> Tensor:
        """Solves ``x + net(x) = y``.

        ``y`` may have a wider dtype than the weights (float64 codes for a float32 model): the
        iterates and residuals then stay in ``y``'s precision and only ``net`` runs in its own.
        This removes the float32 rounding floor of ``y - net(x)`` at the cost of a cast.
        """
        check_finite(y, "ResidualBlock.inverse")
        weight = next(self.net.parameters(), None)
        if weight is None or weight.dtype == y.dtype:
            x, self.last_inverse_stats = self.solver(self.net, y)
        else:
            net = lambda x: self.net(x.to(weight.dtype)).to(y.dtype)  # noqa: E731
            x, self.last_inverse_stats = self.solver(net, y, eps=torch.finfo(weight.dtype).eps)
        return x
