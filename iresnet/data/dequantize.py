"""Uniform dequantization of 8-bit images, optionally at a reduced bit depth.

A discrete image ``x_int in {0, ..., K-1}^D`` (``K = 2**n_bits``) becomes the continuous
``(x_int + u) / K`` with ``u ~ U[0, 1)^D``. A density ``p`` on ``[0, 1)^D`` fitted to these
points lower-bounds the discrete log-likelihood, ``log P(x_int) >= E_u log p - D log K``,
which is what bits-per-dimension reports (see ``iresnet.metrics.bits_per_dim``).
"""

from __future__ import annotations

import torch
from torch import Tensor

# float32 spacing near 255 is 2**-16, so k + u with u closer to 1 rounds up to k + 1: the
# point would leave its bin (and reach exactly 1.0 for the top bin, where a logit is infinite).
# Capping u at 1 - 2**-16 keeps k + u representable below k + 1 for every k <= 255.
_MAX_NOISE = 1.0 - 2.0**-16


def to_bins(x: Tensor, n_bits: int = 8) -> Tensor:
    """Integer bins ``floor(x_uint8 / 2**(8 - n_bits))`` of an 8-bit image, any shape.

    ``x`` is either integer-valued in ``0..255`` (uint8 or another integer dtype) or floats in
    ``[0, 1]`` on the 8-bit grid (multiples of 1/255; other values round to the nearest level).
    Returns a uint8 tensor of the same shape with values in ``0 .. 2**n_bits - 1``.
    """
    if not 1 <= n_bits <= 8:
        raise ValueError(f"n_bits must be between 1 and 8, got {n_bits}")
    if x.is_floating_point():
        if x.numel() and not (x.min() >= 0 and x.max() <= 1):
            raise ValueError(
                "float images must lie in [0, 1] (8-bit levels k/255); got values in "
                f"[{x.min().item():.4g}, {x.max().item():.4g}]. Pass uint8 images or divide by 255."
            )
        x = torch.round(x * 255)
    elif x.dtype != torch.uint8 and x.numel() and not (x.min() >= 0 and x.max() <= 255):
        raise ValueError(
            f"integer images must lie in 0..255; got values in [{x.min().item()}, {x.max().item()}]"
        )
    return x.to(torch.uint8) >> (8 - n_bits)


def dequantize(
    x: Tensor,
    n_bits: int = 8,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Uniformly dequantize an 8-bit image batch: ``(to_bins(x, n_bits) + u) / 2**n_bits``.

    Args:
        x: images of any shape, e.g. ``(B, C, H, W)``; uint8 / 0..255 integers or [0, 1] floats.
        n_bits: bit depth to keep (``n_bits < 8`` drops the low bits first).
        noise: the ``u`` to use, shape of ``x`` in ``[0, 1)``; drawn with ``generator`` if None.
        generator: RNG for ``u`` (the global one if None).

    Returns:
        float32 tensor shaped like ``x`` in ``[0, 1)``; each value stays inside its own bin
        ``[k / 2**n_bits, (k + 1) / 2**n_bits)``.
    """
    bins = to_bins(x, n_bits)
    if noise is None:
        noise = torch.rand(bins.shape, generator=generator, device=bins.device)
    return (bins + noise.clamp(max=_MAX_NOISE)) / 2**n_bits
