"""Layers that only rearrange values: flattening, factoring out half the channels, memory layout."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from iresnet.flows.base import Flow


class Flatten(Flow):
    """``(B, *shape) -> (B, prod(shape))``; logdet 0. ``shape`` is kept for the inverse."""

    def __init__(self, shape: Sequence[int]) -> None:
        super().__init__()
        self.shape = tuple(int(s) for s in shape)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return x.flatten(1), x.new_zeros(x.shape[0])

    def inverse(self, y: Tensor, context: Tensor | None = None) -> Tensor:
        return y.reshape(-1, *self.shape)


class FactorOut(Flow):
    """Multi-scale factoring (RealNVP): half the channels leave as part of ``z``, ``flow`` takes the rest.

    ``x: (B, C, H, W)`` is split along the channels into ``x_1, x_2`` (``C / 2`` each); the output
    is ``cat([x_1.flatten(1), flow(x_2)], dim=1)`` with ``flow``'s logdet, so ``flow`` must end in
    flat ``(B, D)`` codes. ``shape = (C / 2, H, W)`` of ``x_1`` is kept for the inverse.
    """

    def __init__(self, flow: Flow, shape: Sequence[int]) -> None:
        super().__init__()
        self.flow = flow
        self.shape = tuple(int(s) for s in shape)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        out, rest = x.chunk(2, dim=1)
        z, logdet = self.flow(rest, context)
        return torch.cat([out.flatten(1), z], dim=1), logdet

    def inverse(self, y: Tensor, context: Tensor | None = None) -> Tensor:
        out, z = y.split([math.prod(self.shape), y.shape[1] - math.prod(self.shape)], dim=1)
        rest = self.flow.inverse(z, context)
        return torch.cat([out.reshape(-1, *self.shape).to(rest.dtype), rest], dim=1)


class ChannelsLast(Flow):
    """The identity, with the result laid out channels-last (NHWC); logdet 0.

    Placed before convolutional blocks: oneDNN's CPU convolutions are faster on
    channels-last maps, and the squeezes and the logit transform produce
    contiguous (NCHW) ones.
    """

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return x.contiguous(memory_format=torch.channels_last), x.new_zeros(x.shape[0])

    def inverse(self, y: Tensor, context: Tensor | None = None) -> Tensor:
        return y.contiguous(memory_format=torch.channels_last)
