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
from torch.autograd.function import once_differentiable

from iresnet.lipschitz._engine import engine_will_reach, gradient_node
from iresnet.lipschitz._fusion import fused
from iresnet.native.lipswish import lipswish_and_slope, lipswish_beta_grad, lipswish_slope_grads

LIPSWISH_SCALE = 1.1
CLIPSWISH_SCALE = 1.004


def _lipswish(x: Tensor, beta: Tensor) -> Tensor:
    """``f(x) = silu(beta x) / (1.1 beta)``."""
    return F.silu(x * beta).mul_(1 / (LIPSWISH_SCALE * beta))


@fused(native=lipswish_and_slope)
def _lipswish_and_slope(x: Tensor, beta: Tensor) -> tuple[Tensor, Tensor]:
    """``(f(x), f'(x))``."""
    z = x * beta
    slope = torch.ops.aten.silu_backward(z.new_full((), 1 / LIPSWISH_SCALE).expand_as(z), z)
    return F.silu(z).mul_(1 / (LIPSWISH_SCALE * beta)), slope


def _sigmoid_slope(z: Tensor) -> tuple[Tensor, Tensor]:
    """``s = sigmoid(z)`` and ``s (1 - s)``."""
    s = torch.sigmoid(z)
    return s, torch.addcmul(s, s, s, value=-1)


def _silu_curvature(z: Tensor, s: Tensor, slope: Tensor) -> Tensor:
    """``silu''(z) = s (1 - s) (2 + z (1 - 2s))``."""
    return torch.addcmul(z.new_full((), 2.0), z, torch.sub(1, s, alpha=2)).mul_(slope)


@fused(native=lipswish_beta_grad)
def _lipswish_beta_grad(grad: Tensor, x: Tensor, beta: Tensor) -> Tensor:
    """``sum grad df/dbeta``, summed to ``beta``'s shape."""
    _, slope = _sigmoid_slope(x * beta)
    return (grad * slope).mul_(x).mul_(x).sum_to_size(beta.shape) / LIPSWISH_SCALE


@fused(native=lipswish_slope_grads)
def _lipswish_slope_grads(gg_x: Tensor, grad: Tensor, x: Tensor, beta: Tensor) -> tuple[Tensor, Tensor]:
    """``(d/dx, d/dbeta)`` of ``<gg_x, grad f'(x)>``: ``gg_x grad f''(x)`` and the sum of
    ``gg_x grad df'/dbeta`` to ``beta``'s shape."""
    z = x * beta
    s, slope = _sigmoid_slope(z)
    t = (gg_x * grad).mul_(_silu_curvature(z, s, slope))
    return t * (beta / LIPSWISH_SCALE), (t * x).sum_to_size(beta.shape) / LIPSWISH_SCALE


class _LipSwishFunction(torch.autograd.Function):
    r"""``f(x) = x sigmoid(beta x) / 1.1`` with hand-written first and second derivatives.

    Log-det estimators take many vector-Jacobian products through each branch per step; with
    ``f'`` stored in the forward pass each product costs one multiply instead of autograd's
    chain of sigmoid, multiply and divide nodes. The hidden tensors are large and every
    elementwise pass over them costs memory bandwidth, so with ``fused`` (training) the other
    formulas run as one loop each (:func:`iresnet.lipschitz._fusion.fused`: native on the CPU,
    compiled elsewhere; their eager form is arranged around torch's fused SiLU kernels,
    ``silu(z) = z sigmoid(z)``), and ``beta x`` is recomputed there rather than stored. With
    ``z = beta x``, ``s = sigmoid(z)``, ``silu'(z) = s (1 + z (1 - s))`` and
    ``silu''(z) = s (1 - s) (2 + z (1 - 2s))``:

        f(x)         = silu(z) / (1.1 beta)
        f'(x)        = silu'(z) / 1.1
        df/dbeta     = x^2 s (1 - s) / 1.1
        f''(x)       = beta silu''(z) / 1.1
        df'/dbeta    = x silu''(z) / 1.1

    ``beta`` is broadcastable to ``x`` (e.g. ``(1, C, 1, 1)``).
    """

    @staticmethod
    def forward(ctx, x: Tensor, beta: Tensor, fused: bool = True) -> Tensor:
        out, slope = _kernel(_lipswish_and_slope, fused)(x, beta)
        ctx.save_for_backward(x, beta, slope)
        ctx.beta_node = gradient_node(beta)
        ctx.fused = fused
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        x, beta, slope = ctx.saved_tensors
        # The series estimators differentiate w.r.t. x only, many times per step.
        want_beta = ctx.needs_input_grad[1] and engine_will_reach(ctx.beta_node)
        # A node for the second derivative only when this backward pass builds a graph.
        first_order = _LipSwishBackward.apply if torch.is_grad_enabled() else _lipswish_grads
        grad_x, grad_beta = first_order(grad, x, beta, slope, want_beta, ctx.fused)
        return grad_x, (grad_beta if want_beta else None), None


def _kernel(kernel: Callable, fused: bool) -> Callable:
    """A :func:`fused` kernel, or its eager formula."""
    return kernel if fused else kernel.eager  # type: ignore[attr-defined]


def _lipswish_grads(grad, x, beta, slope, want_beta: bool, fused: bool) -> tuple[Tensor, Tensor]:
    """``(grad f'(x), sum grad df/dbeta)`` (zeros for the latter unless ``want_beta``)."""
    if want_beta:
        grad_beta = _kernel(_lipswish_beta_grad, fused)(grad, x, beta)
    else:
        grad_beta = beta.new_zeros(beta.shape)
    return grad * slope, grad_beta


class _LipSwishBackward(torch.autograd.Function):
    """:func:`_lipswish_grads`, differentiable once more."""

    @staticmethod
    def forward(ctx, grad, x, beta, slope, want_beta: bool, fused: bool):
        ctx.save_for_backward(grad, x, beta, slope)
        ctx.want_beta, ctx.fused = want_beta, fused
        return _lipswish_grads(grad, x, beta, slope, want_beta, fused)

    @staticmethod
    @once_differentiable
    def backward(ctx, gg_x: Tensor, gg_beta: Tensor | None):
        grad, x, beta, slope = ctx.saved_tensors
        d_grad = gg_x * slope
        d_x, d_beta = _kernel(_lipswish_slope_grads, ctx.fused)(gg_x, grad, x, beta)
        if ctx.want_beta and gg_beta is not None:
            # Terms through grad_beta = sum grad x^2 s (1 - s) / 1.1 (rare: only a graph of
            # beta's own gradient needs them).
            z = x * beta
            s, sigmoid_slope = _sigmoid_slope(z)
            gg_beta = gg_beta / LIPSWISH_SCALE
            d_grad = d_grad + gg_beta * x * x * sigmoid_slope
            d_x = d_x + gg_beta * grad * x * _silu_curvature(z, s, sigmoid_slope)
            d_beta = d_beta + (gg_beta * grad * x.pow(3) * sigmoid_slope * (1 - 2 * s)).sum_to_size(beta.shape)
        return d_grad, d_x, d_beta, None, None, None


class LipSwish(nn.Module):
    r"""``f(x) = x * sigmoid(beta x) / 1.1`` with learnable ``beta = softplus(raw_beta) > 0``, init 1.

    ``x: (B, C, *) -> (B, C, *)``. ``beta`` is one scalar, or one per channel (dim 1) when
    ``num_channels`` is given. ``|f'(x)| <= 1`` everywhere for every ``beta``.
    """

    def __init__(self, num_channels: int | None = None) -> None:
        super().__init__()
        # softplus(log(e - 1)) = 1
        self.raw_beta = nn.Parameter(torch.full((num_channels or 1,), math.log(math.e - 1.0)))

    @property
    def beta(self) -> Tensor:
        """``(C,)`` or ``(1,)`` positive slopes."""
        return F.softplus(self.raw_beta)

    def forward(self, x: Tensor) -> Tensor:
        # (C,) -> (C, 1, ..., 1) so it broadcasts along dim 1 of x.
        beta = self.beta.view(-1, *([1] * (x.ndim - 2)))
        if not torch.is_grad_enabled():
            # Inference (e.g. fixed-point inversion) needs no stored derivative.
            return _lipswish(x, beta)
        # Fused kernels in training only: there hundreds of steps repay a compilation (about 2 s
        # per process with torch.compile), while an evaluation's time goes to the series'
        # products, which fusion cannot help.
        return _LipSwishFunction.apply(x, beta, self.training)


class CLipSwish(nn.Module):
    r"""Concatenated LipSwish ``x -> cat([f(x), f(-x)], dim=1) / 1.004``, 1-Lipschitz.

    ``x: (B, C, *) -> (B, 2C, *)``; ``f`` is a :class:`LipSwish` shared by both halves.
    """

    channel_multiplier = 2

    def __init__(self, num_channels: int | None = None) -> None:
        super().__init__()
        self.lipswish = LipSwish(num_channels)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.lipswish(x), self.lipswish(-x)], dim=1) / CLIPSWISH_SCALE


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
