"""Exact spectral norm of a (normalized) layer from a dense SVD, for checking on small shapes."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


@torch.no_grad()
def exact_spectral_norm(module: nn.Module, input_shape: Sequence[int]) -> float:
    """``||L||_2`` of the layer ``L(x) = module(x) - bias`` as a linear map, by dense SVD.

    The matrix of ``L`` is built by applying it to the ``n = prod(input_shape)`` basis vectors,
    so keep ``n`` small (a few thousand at most). ``module.weight`` is read in eval mode, so a
    spectral-norm parametrization is applied without updating its vectors.

    Args:
        module: ``nn.Linear`` (``input_shape = (in_features,)``) or ``nn.Conv2d``
            (``input_shape = (C, H, W)``; its padding mode is honoured).
    """
    if isinstance(module, nn.Linear):
        expected = 1
    elif isinstance(module, nn.Conv2d):
        expected = 3
    else:
        raise TypeError(f"exact_spectral_norm supports nn.Linear and nn.Conv2d; got {type(module).__name__}.")
    if len(input_shape) != expected:
        raise ValueError(
            f"input_shape for {type(module).__name__} must have {expected} entries; got {tuple(input_shape)}."
        )
    was_training = module.training
    module.eval()
    try:
        weight = module.weight.double()
    finally:
        module.train(was_training)
    n = math.prod(input_shape)
    basis = torch.eye(n, dtype=torch.float64, device=weight.device).reshape(n, *input_shape)
    if isinstance(module, nn.Linear):
        columns = F.linear(basis, weight)
    else:
        columns = module._conv_forward(basis, weight, None)
    return torch.linalg.matrix_norm(columns.reshape(n, -1), ord=2).item()
