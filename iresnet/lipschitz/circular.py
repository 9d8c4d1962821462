r"""Singular values of circular convolutions by the FFT method (Sedghi, Gupta & Long, ICLR 2019).

A stride-1 convolution with circular padding on ``(C_in, H, W)`` images is block-diagonalized by
the 2-D DFT: its singular values are those of the ``H * W`` matrices ``K_hat[:, :, f1, f2]``
(``C_out x C_in``), where ``K_hat`` is the FFT of the kernel zero-padded to ``(H, W)``.
Cross-correlation (what ``conv2d`` computes) and the padding offset change ``K_hat`` only by
conjugation, frequency reversal and unit phases, which leave the singular values unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def conv_singular_values_fft(weight: Tensor, input_hw: Sequence[int]) -> Tensor:
    """All singular values of the circular convolution with ``weight`` on ``input_hw`` images.

    Args:
        weight: ``(C_out, C_in, kh, kw)`` with ``kh <= H``, ``kw <= W``.
        input_hw: ``(H, W)``.

    Returns:
        ``(H, W, min(C_out, C_in))``, each frequency's values in descending order.
    """
    height, width = input_hw
    if weight.ndim != 4 or weight.shape[-2] > height or weight.shape[-1] > width:
        raise ValueError(
            f"weight must be (C_out, C_in, kh, kw) with kh <= H and kw <= W; got weight shape "
            f"{tuple(weight.shape)} and input_hw={tuple(input_hw)}."
        )
    transforms = torch.fft.fft2(weight, s=(height, width))
    return torch.linalg.svdvals(transforms.permute(2, 3, 0, 1))


def circular_conv_spectral_norm(weight: Tensor, input_hw: Sequence[int]) -> Tensor:
    """``()`` largest singular value of the circular convolution (see :func:`conv_singular_values_fft`)."""
    return conv_singular_values_fft(weight, input_hw).max()
