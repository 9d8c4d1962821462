r"""The dense layer of i-DenseNets (Perugachi-Diaz et al. 2021), Lipschitz below ``coeff``.

``h -> cat([eta_1 h, eta_2 phi(W h)], dim=1)`` with ``eta_1, eta_2 > 0`` learned and normalized
so that ``eta_1^2 + eta_2^2 = coeff^2``. For two inputs ``h, h'`` with ``d = h - h'``,

    |out - out'|^2 = eta_1^2 |d|^2 + eta_2^2 |phi(W h) - phi(W h')|^2
                  <= (eta_1^2 + eta_2^2 Lip(phi)^2 |W|^2) |d|^2,

so ``Lip <= sqrt(eta_1^2 + eta_2^2 Lip(phi)^2 |W|^2) <= sqrt(eta_1^2 + eta_2^2) = coeff`` when
``|W| <= 1`` (spectral normalization) and ``Lip(phi) <= 1`` (e.g. CLipSwish). A dense branch
``g = W_out o D_k o ... o D_1`` then has ``Lip(g) <= |W_out| prod_i Lip(D_i) <= coeff^(k+1)``.
The learned ratio ``eta_1 / eta_2`` trades how much of the input passes on unchanged against
how much the new features weigh, without touching the bound.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from iresnet.lipschitz.conditional import takes_context

# Keeps both weights away from zero (the reference implementation's offset before normalizing).
_ETA_FLOOR = 0.1


class LipschitzDenseLayer(nn.Module):
    """``h: (B, C, *) -> (B, C + G, *)``: ``cat([eta_1 h, eta_2 network(h)], dim=1)``.

    Args:
        network: the new features ``phi(W h)``, ``(B, C, *) -> (B, G, *)``, with Lipschitz
            constant at most 1 (spectrally normalized layers and 1-Lipschitz activations).
        coeff: ``sqrt(eta_1^2 + eta_2^2)``, the layer's Lipschitz bound; ``0 < coeff < 1``.
        learnable: learn ``eta_1 / eta_2`` (else both are ``coeff / sqrt 2``).
    """

    def __init__(self, network: nn.Module, coeff: float = 0.98, learnable: bool = True) -> None:
        super().__init__()
        if not 0 < coeff < 1:
            raise ValueError(f"coeff must satisfy 0 < coeff < 1, got {coeff!r}; use e.g. coeff=0.98.")
        self.network = network
        self.coeff = float(coeff)
        # softplus(raw) + floor, normalized: equal weights at initialization.
        raw = torch.full((2,), math.log(math.e - 1.0))
        if learnable:
            self.raw_eta = nn.Parameter(raw)
        else:
            self.register_buffer("raw_eta", raw)

    def eta(self) -> Tensor:
        """``(eta_1, eta_2)`` with ``eta_1^2 + eta_2^2 = coeff^2``."""
        eta = F.softplus(self.raw_eta) + _ETA_FLOOR
        return eta / eta.norm() * self.coeff

    def forward(self, h: Tensor, context: Tensor | None = None) -> Tensor:
        """``h: (B, C, *)``; a conditional ``network`` (see :mod:`.conditional`) gets the context."""
        eta = self.eta()
        new = self.network(h) if context is None or not takes_context(self.network) else self.network(h, context)
        return torch.cat([h * eta[0], new * eta[1]], dim=1)

    def lipschitz_bound(self, bound_of: Callable[[nn.Module], float]) -> float:
        """``sqrt(eta_1^2 + eta_2^2 Lip(network)^2)``: at most ``coeff`` for a 1-Lipschitz network."""
        eta_1, eta_2 = self.eta().tolist()
        return math.sqrt(eta_1**2 + eta_2**2 * bound_of(self.network) ** 2)
