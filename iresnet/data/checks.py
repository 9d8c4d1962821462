"""Validation of user-provided images before they reach a model."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def _is_0_to_255(x: Tensor) -> bool:
    """Whether every value is a whole number in 0..255 (integer dtype or integral floats)."""
    if not x.is_floating_point():
        return bool(x.min() >= 0 and x.max() <= 255)
    return bool(x.min() >= 0 and x.max() <= 255 and torch.equal(x, x.round()))


def check_images(
    x: Tensor, expected_shape: Sequence[int] | None = None, where: str = "images"
) -> None:
    """Raise ``ValueError`` (naming ``where``, the problem and the fix) unless ``x`` is valid.

    Valid images are ``(C, H, W)`` or ``(B, C, H, W)``, finite, and either floats in ``[0, 1]``
    or whole numbers in ``0..255`` (uint8 / integer dtypes, or integral floats). With
    ``expected_shape = (C, H, W)`` the channel count and the image size must also match.
    """
    if x.dim() not in (3, 4):
        raise ValueError(
            f"{where}: expected an image (C, H, W) or a batch (B, C, H, W), got shape "
            f"{tuple(x.shape)}; add or remove dimensions (e.g. x.unsqueeze(0) for one image)."
        )
    if x.numel() == 0:
        raise ValueError(f"{where}: got an empty tensor of shape {tuple(x.shape)}.")
    if x.is_floating_point() and not torch.isfinite(x).all():
        n_bad = int((~torch.isfinite(x)).sum())
        raise ValueError(
            f"{where}: {n_bad} pixel(s) are NaN or Inf; fix or drop those images before use."
        )
    if not ((x.is_floating_point() and x.min() >= 0 and x.max() <= 1) or _is_0_to_255(x)):
        raise ValueError(
            f"{where}: pixel values span [{x.min().item():.4g}, {x.max().item():.4g}], which is "
            "neither floats in [0, 1] nor whole numbers in 0..255; rescale the images to one "
            "of these ranges (e.g. undo any mean/std normalisation)."
        )
    if expected_shape is None:
        return
    channels, height, width = expected_shape
    if x.shape[-3] != channels:
        raise ValueError(
            f"{where}: expected {channels} channel(s) (images shaped (C, H, W) = "
            f"{tuple(expected_shape)}), got {x.shape[-3]} in shape {tuple(x.shape)}; convert "
            "the images (grayscale <-> RGB) or put channels first (HWC -> CHW: x.permute)."
        )
    if tuple(x.shape[-2:]) != (height, width):
        raise ValueError(
            f"{where}: expected {height}x{width} images, got {x.shape[-2]}x{x.shape[-1]}; "
            f"resize them to {height}x{width} first."
        )


def to_unit_interval(x: Tensor) -> Tensor:
    """Valid images (see ``check_images``) as float32 in ``[0, 1]``, same shape.

    uint8, integer and integral-float images with values above 1 are read as 0..255 and
    divided by 255; float images already in ``[0, 1]`` pass through.
    """
    check_images(x)
    if x.is_floating_point() and x.max() <= 1:
        return x.float()
    return x.float() / 255
