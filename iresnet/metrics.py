"""Bits per dimension of dequantized images, and mean +- standard error for reporting."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor


def bits_per_dim(log_prob_x: Tensor, num_dims: int, n_bins: int = 256) -> Tensor:
    """Bits per dimension ``-(log p(x) - D log n_bins) / (D ln 2)``, elementwise, shape ``(B,)``.

    ``log_prob_x`` is the log-density (nats) of the dequantized image scaled to ``[0, 1)^D``,
    including the logdet of any preprocessing such as the logit transform. Scaling the bins
    of width 1 to width ``1 / n_bins`` adds ``D log n_bins`` to the density, which is removed
    here so the result is (an upper bound on) the discrete code length per pixel value.
    """
    return -(log_prob_x - num_dims * math.log(n_bins)) / (num_dims * math.log(2))


def mean_and_standard_error(values: Tensor | Sequence[float]) -> tuple[float, float]:
    """Mean and standard error ``std / sqrt(n)`` (unbiased std) of ``n`` values, any shape.

    The standard error of a single value is undefined and returned as NaN.
    """
    values = torch.as_tensor(values, dtype=torch.float64).flatten()
    n = values.numel()
    if n == 0:
        raise ValueError("mean_and_standard_error needs at least one value, got none")
    if n == 1:
        return values.item(), math.nan
    return values.mean().item(), (values.std() / math.sqrt(n)).item()
