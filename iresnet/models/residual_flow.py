"""The multi-scale image flow of i-ResNet / Residual Flows."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from iresnet.flows import FlowSequential, LogitTransform, Squeeze
from iresnet.models.base import FlowModel
from iresnet.models.blocks import conv_branch, fc_branch, residual_stack
from iresnet.models.priors import get_prior


class ResidualFlow(FlowModel):
    """Multi-scale residual flow on images ``x: (B, C, H, W)`` in [0, 1].

    Layers, in order: ``LogitTransform(alpha)``, an optional initial ``Squeeze``, then
    ``len(n_blocks)`` scales of residual blocks (normalized convs with kernel sizes ``kernels``,
    each block followed by ``ActNorm``) with a ``Squeeze`` between scales, optionally factoring
    out half the channels after each squeeze, then an optional stack of ``fc_blocks`` fully
    connected residual blocks on the flattened remainder. ``z: (B, C * H * W)`` concatenates the
    factored-out parts and the final output.

    Args:
        input_shape: ``(C, H, W)`` of the images.
        n_blocks: residual blocks per scale, e.g. ``[4, 4, 4]`` for three scales.
        hidden_channels: width of the convolutional branches.
        logdet, inverse: estimator and solver objects shared by every block.
        prior: ``"normal"`` or ``"learned"``.
        preact: start every branch with the activation.
        first_preact: whether the model's first branch starts with it too. The configs set
            ``false``, as Residual Flows does: the first branch then sees the logit-transformed
            image directly, where LipSwish would flatten the background pixels, whose logits sit
            near log(alpha) (5-epoch protocol test bpd 1.960 -> 1.918). The default ``true``
            keeps the layout of checkpoints saved before the option existed.
        channels_last: keep conv weights and feature maps in NHWC layout, which oneDNN's CPU
            convolutions run about 12% faster than NCHW in a training step.
    """

    def __init__(
        self,
        input_shape: Sequence[int] = (1, 28, 28),
        n_blocks: Sequence[int] = (4, 4, 4),
        hidden_channels: int = 64,
        kernels: str = "3-1-3",
        activation: str = "lipswish",
        coeff: float = 0.98,
        n_power_iterations: int = 1,
        logdet=None,
        inverse=None,
        init_squeeze: bool = False,
        factor_out: bool = False,
        fc_blocks: int = 4,
        fc_hidden: int = 64,
        fc_hidden_layers: int = 2,
        actnorm: bool = True,
        preact: bool = True,
        first_preact: bool = True,
        prior: str = "normal",
        alpha: float = 1e-6,
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        c, h, w = (int(s) for s in input_shape)
        self.input_shape = (c, h, w)
        self.factor_out = factor_out
        self.logit = LogitTransform(alpha)
        self.squeeze = Squeeze(2)
        self.init_squeeze = init_squeeze
        if init_squeeze:
            c, h, w = self._squeezed(c, h, w)

        self.scales = torch.nn.ModuleList()
        self.factored_dims: list[int] = []
        for i, n in enumerate(n_blocks):
            branches = [
                conv_branch(
                    c, hidden_channels, (h, w), kernels, activation, coeff, n_power_iterations,
                    preact and (first_preact or (i, j) != (0, 0)),
                )
                for j in range(n)
            ]  # fmt: skip
            self.scales.append(residual_stack(branches, c, logdet, inverse, actnorm))
            if i < len(n_blocks) - 1:
                c, h, w = self._squeezed(c, h, w)
                if factor_out:
                    c //= 2
                    self.factored_dims.append(c * h * w)
        self.final_shape = (c, h, w)
        dim = c * h * w
        branches = [
            fc_branch(dim, fc_hidden, fc_hidden_layers, activation, coeff, n_power_iterations, preact)
            for _ in range(fc_blocks)
        ]
        self.fc = residual_stack(branches, dim, logdet, inverse, actnorm) if fc_blocks else FlowSequential()
        self.prior = get_prior(prior, math.prod(self.input_shape))
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.to(memory_format=self.memory_format)

    def _squeezed(self, c: int, h: int, w: int) -> tuple[int, int, int]:
        if h % 2 or w % 2:
            raise ValueError(
                f"Cannot squeeze a {h}x{w} feature map: its sides must be even. "
                "Use fewer scales or set init_squeeze=false."
            )
        return 4 * c, h // 2, w // 2

    def _check_input(self, x: Tensor) -> None:
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(
                f"ResidualFlow expects images of shape (B, {', '.join(map(str, self.input_shape))}), got "
                f"{tuple(x.shape)}; the model was built for input_shape={list(self.input_shape)}."
            )
        if not torch.isfinite(x).all():
            raise ValueError("Input images contain NaN or Inf pixels; clean the data before the model.")
        if x.min() < 0 or x.max() > 1:
            raise ValueError(
                f"Input pixels must lie in [0, 1], got range [{float(x.min()):.3g}, {float(x.max()):.3g}]; "
                "divide 0..255 images by 255 (the data modules do this and dequantize)."
            )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x: (B, C, H, W)`` in [0, 1] -> ``z: (B, C*H*W)``, ``logdet: (B,)``."""
        self._check_input(x)
        x, logdet = self.logit(x)
        if self.init_squeeze:
            x, _ = self.squeeze(x)
        factored = []
        for i, scale in enumerate(self.scales):
            x, ld = scale(x.contiguous(memory_format=self.memory_format))
            logdet = logdet + ld
            if i < len(self.scales) - 1:
                x, _ = self.squeeze(x)
                if self.factor_out:
                    z_i, x = x.chunk(2, dim=1)
                    factored.append(z_i.flatten(1))
        x, ld = self.fc(x.flatten(1))
        return torch.cat([*factored, x], dim=1), logdet + ld

    def inverse(self, z: Tensor) -> Tensor:
        """``z: (B, C*H*W)`` -> ``x: (B, C, H, W)``."""
        *factored, x = z.split([*self.factored_dims, math.prod(self.final_shape)], dim=1)
        x = self.fc.inverse(x).view(-1, *self.final_shape)
        for i in reversed(range(len(self.scales))):
            if i < len(self.scales) - 1:
                if self.factor_out:
                    z_i = factored[i].view(-1, *x.shape[1:])
                    x = torch.cat([z_i, x], dim=1)
                x = self.squeeze.inverse(x)
            x = self.scales[i].inverse(x)
        if self.init_squeeze:
            x = self.squeeze.inverse(x)
        return self.logit.inverse(x)
