r"""Variational dequantization (Ho et al. 2019, Flow++): noise drawn from a learned ``q(u | x)``.

Discrete data ``x`` in ``{0, ..., n-1}^D`` are modelled through a density ``p`` on ``[0, 1)^D``:
``P(x) = n^-D E_{u ~ q(.|x)}[p((x + u) / n) / q(u | x)]``, so by Jensen's inequality

    log P(x) >= E_q[log p((x + u) / n) - log q(u | x)] - D log n,

the variational bound, with equality when ``q(u | x)`` is ``p``'s own shape inside the cell.
Uniform dequantization is ``q = 1``. Here ``u = sigmoid(f(eps; x))`` with ``eps ~ N(0, I)`` and
``f`` a residual flow on the noise whose branches are shifted by features of ``x`` (a context,
:mod:`iresnet.lipschitz.conditional`), so

    log q(u | x) = log N(eps) - log|det df/deps| - sum log sigmoid'(f(eps)).

Its log-determinant comes from the same estimators as the model's (unbiased with the roulette),
so the bound's estimate is unbiased too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from iresnet.flows import ActNorm, Flow, FlowSequential, ResidualBlock
from iresnet.models.blocks import conv_branch, fc_branch

_LOG_2PI = math.log(2 * math.pi)


def _shift_from_maps(features: int) -> callable:
    """Context networks for feature maps ``(B, features, H, W)``: a 3x3 conv to the branch's width,
    starting at zero."""

    def make(width: int) -> nn.Module:
        conv = nn.Conv2d(features, width, 3, padding=1)
        nn.init.zeros_(conv.weight)
        nn.init.zeros_(conv.bias)
        return conv

    return make


def _shift_from_vectors(features: int) -> callable:
    def make(width: int) -> nn.Module:
        linear = nn.Linear(features, width)
        nn.init.zeros_(linear.weight)
        nn.init.zeros_(linear.bias)
        return linear

    return make


class VariationalDequantizer(nn.Module):
    """``q(u | x)``: draws dequantization noise for a batch and its log-density.

    ``forward(x) -> (y, log_q)``: ``x`` in ``[0, 1)`` (already dequantized, e.g. uniformly: only its
    bins ``floor(n x)`` are read), ``y = (bins + u) / n`` with ``u ~ q(. | bins)``, and
    ``log_q = log q(u | bins)``, shape ``(B,)``.

    Args:
        input_shape: ``(C, H, W)`` images (convolutional branches) or ``(D,)`` vectors.
        n_bins: the number of levels ``n`` of each value.
        hidden: width of the branches and of the features of ``x``.
        n_blocks: residual blocks of the noise flow.
        coeff: spectral-norm coefficient of the branches.
        logdet: the estimator of the noise flow's blocks (the model's, typically).
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        n_bins: int = 256,
        hidden: int = 32,
        n_blocks: int = 2,
        coeff: float = 0.9,
        logdet=None,
    ) -> None:
        super().__init__()
        if n_bins < 2:
            raise ValueError(f"n_bins must be at least 2, got {n_bins}.")
        self.input_shape, self.n_bins = tuple(int(s) for s in input_shape), n_bins
        images = len(self.input_shape) == 3
        channels = self.input_shape[0]
        if images:
            self.features = nn.Sequential(
                nn.Conv2d(channels, hidden, 3, padding=1), nn.SiLU(), nn.Conv2d(hidden, hidden, 3, padding=1), nn.SiLU()
            )  # fmt: skip
            shift = _shift_from_maps(hidden)
            spatial = self.input_shape[1:]
            branches = [conv_branch(channels, hidden, spatial, coeff=coeff, context=shift) for _ in range(n_blocks)]
        else:
            self.features = nn.Sequential(nn.Linear(channels, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())
            shift = _shift_from_vectors(hidden)
            branches = [fc_branch(channels, hidden, 1, coeff=coeff, context=shift) for _ in range(n_blocks)]
        flows: list[Flow] = []
        for branch in branches:
            flows += [ResidualBlock(branch, logdet=logdet), ActNorm(channels)]
        self.flow = FlowSequential(*flows)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        bins = torch.floor(x * self.n_bins).clamp_(0, self.n_bins - 1)
        features = self.features(bins / (self.n_bins - 1) - 0.5)
        eps = torch.randn_like(x)
        z, logdet = self.flow(eps, features)
        u = torch.sigmoid(z)
        # log sigmoid'(z) = -softplus(-z) - softplus(z)
        log_slope = -(F.softplus(-z) + F.softplus(z))
        log_normal = -0.5 * (eps.pow(2) + _LOG_2PI)
        log_q = (log_normal - log_slope).flatten(1).sum(1) - logdet
        return (bins + u) / self.n_bins, log_q
