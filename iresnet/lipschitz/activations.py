r"""1-Lipschitz activations for residual branches, and a factory over them by name.

LipSwish (Chen et al. 2019, Residual Flows): ``f(x) = x * sigmoid(beta x) / 1.1``. With
``s(z) = d/dz [z sigmoid(z)] = sigmoid(z) + z sigmoid(z) (1 - sigmoid(z))``, ``f'(x) = s(beta x) / 1.1``
and ``s`` ranges over ``[-0.0998, 1.0998]``, so ``|f'| <= 0.9999`` for every ``beta > 0``.

CLipSwish (Perugachi-Diaz et al. 2021, i-DenseNets): ``x -> [f(x), f(-x)] / 1.004`` along dim 1.
Elementwise, the Jacobian stacks ``diag(f'(x))`` on ``diag(-f'(-x))``, whose spectral norm is
``max_i sqrt(f'(x_i)^2 + f'(-x_i)^2)``. Since ``z sigmoid(z) - (-z) sigmoid(-z) = z``,
``s(z) + s(-z) = 1``, so the norm is ``sqrt(s^2 + (1 - s)^2) / 1.1`` with ``s`` in
``[-0.0998, 1.0998]``: at most ``sqrt(1.0998^2 + 0.0998^2) / 1.1 = 1.00396 < 1.004``.
This needs the same ``beta`` for ``x`` and ``-x``, so both halves share one LipSwish.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from iresnet.ops.lipswish import LIPSWISH_SCALE, lipswish

CLIPSWISH_SCALE = 1.004


class LipSwish(nn.Module):
    r"""``f(x) = x * sigmoid(beta x) / 1.1`` with learnable ``beta = softplus(raw_beta) > 0``, init ``beta``.

    ``x: (B, C, *) -> (B, C, *)``. ``beta`` is one scalar, or one per channel (dim 1) when
    ``num_channels`` is given and ``per_channel``. ``|f'(x)| <= 1`` everywhere for every ``beta``.
    Residual Flows' own LipSwish is ``per_channel=False, beta=softplus(0.5) = 0.974``.
    """

    def __init__(self, num_channels: int | None = None, per_channel: bool = True, beta: float = 1.0) -> None:
        super().__init__()
        if not beta > 0:
            raise ValueError(f"LipSwish beta must be positive, got {beta!r}.")
        size = num_channels if per_channel and num_channels else 1
        # raw_beta = softplus^-1(beta) = log(e^beta - 1)
        self.raw_beta = nn.Parameter(torch.full((size,), math.log(math.expm1(beta))))

    @property
    def beta(self) -> Tensor:
        """``(C,)`` or ``(1,)`` positive slopes."""
        return F.softplus(self.raw_beta)

    def forward(self, x: Tensor) -> Tensor:
        # (C,) -> (C, 1, ..., 1) so it broadcasts along dim 1 of x.
        beta = self.beta.view(-1, *([1] * (x.ndim - 2)))
        return lipswish(x, beta)


class CLipSwish(nn.Module):
    r"""Concatenated LipSwish ``x -> cat([f(x), f(-x)], dim=1) / 1.004``, 1-Lipschitz.

    ``x: (B, C, *) -> (B, 2C, *)``; ``f`` is a :class:`LipSwish` shared by both halves.
    """

    channel_multiplier = 2

    def __init__(self, num_channels: int | None = None) -> None:
        super().__init__()
        self.lipswish = LipSwish(num_channels)

    def forward(self, x: Tensor) -> Tensor:
        # f(-x) = f(x) - x / 1.1 (silu(z) - silu(-z) = z): one evaluation of f for both halves.
        y = self.lipswish(x)
        return torch.cat([y, y - x / LIPSWISH_SCALE], dim=1) / CLIPSWISH_SCALE


# name -> (constructor taking num_channels, output channels per input channel)
_ACTIVATIONS: dict[str, tuple[Callable[[int | None], nn.Module], int]] = {
    "elu": (lambda _: nn.ELU(), 1),
    "relu": (lambda _: nn.ReLU(), 1),
    "softplus": (lambda _: nn.Softplus(), 1),
    "lipswish": (LipSwish, 1),
    "clipswish": (CLipSwish, CLipSwish.channel_multiplier),
}


def _lookup(name: str) -> tuple[Callable[[int | None], nn.Module], int]:
    try:
        return _ACTIVATIONS[name.lower()]
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; the 1-Lipschitz activations are: {', '.join(_ACTIVATIONS)}."
        ) from None


def get_activation(name: str, num_channels: int | None = None) -> nn.Module:
    """A new 1-Lipschitz activation by name (case-insensitive): elu, relu, softplus, lipswish, clipswish.

    ``num_channels`` gives LipSwish/CLipSwish one ``beta`` per channel; others ignore it.
    """
    constructor, _ = _lookup(name)
    return constructor(num_channels)


def activation_channel_multiplier(name: str) -> int:
    """Output channels per input channel of the named activation (2 for clipswish, else 1)."""
    return _lookup(name)[1]
