r"""LipSwish as a PyTorch formula: ordinary autograd, twice differentiable, fused by ``torch.compile``.

``f(x) = x sigmoid(beta x) / 1.1`` (the activation, and why it is 1-Lipschitz:
:mod:`iresnet.lipschitz.activations`). Written with ``silu(z) = z sigmoid(z)`` as

    f(x) = silu(beta x) / (1.1 beta),

so that a vector-Jacobian product w.r.t. ``x`` is three elementwise passes (``1 / (1.1 beta)``,
``silu'``, ``beta``) and autograd skips ``beta``'s terms when only ``x``'s gradient is asked for
(the log-det series' products). ``silu``'s double backward is PyTorch's own.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

LIPSWISH_SCALE = 1.1


def lipswish(x: Tensor, beta: Tensor) -> Tensor:
    """``f(x)`` for ``x: (B, C, *)`` and positive ``beta`` broadcastable to it (e.g. ``(1, C, 1, 1)``)."""
    return F.silu(x * beta) * (1 / (LIPSWISH_SCALE * beta))
