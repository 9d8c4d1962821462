"""Space-to-depth reshaping (RealNVP's squeeze)."""

from __future__ import annotations

from torch import Tensor

from iresnet.flows.base import Flow


class Squeeze(Flow):
    """Trades space for channels: ``(B, C, H, W) -> (B, C f^2, H / f, W / f)``; logdet 0.

    Each output channel block ``c * f^2 + i * f + j`` holds the pixels at offset ``(i, j)`` of
    the ``f x f`` cells of input channel ``c``. The context is ignored.
    """

    def __init__(self, factor: int = 2) -> None:
        super().__init__()
        if factor < 2:
            raise ValueError(f"Squeeze factor must be >= 2, got {factor}.")
        self.factor = factor

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        b, c, h, w = x.shape
        f = self.factor
        if h % f or w % f:
            raise ValueError(
                f"Squeeze(factor={f}) needs height and width divisible by {f}, got {h}x{w}; "
                "resize or pad the images, or use fewer scales."
            )
        y = x.reshape(b, c, h // f, f, w // f, f).permute(0, 1, 3, 5, 2, 4)
        return y.reshape(b, c * f * f, h // f, w // f), x.new_zeros(b)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> Tensor:
        b, c, h, w = y.shape
        f = self.factor
        x = y.reshape(b, c // (f * f), f, f, h, w).permute(0, 1, 4, 2, 5, 3)
        return x.reshape(b, c // (f * f), h * f, w * f)
