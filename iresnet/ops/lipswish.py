r"""LipSwish's autograd: stored slopes, hand-written second derivatives, fused loops.

``f(x) = x sigmoid(beta x) / 1.1`` (the activation itself, and why it is 1-Lipschitz:
:mod:`iresnet.lipschitz.activations`). Log-det estimators take many vector-Jacobian products
through each branch per step; with ``f'`` stored in the forward pass each product costs one
multiply instead of autograd's chain of sigmoid, multiply and divide nodes. The hidden tensors
are large and every elementwise pass over them costs memory bandwidth, so in training the other
formulas run as one loop each (:func:`iresnet.ops.fusion.fused`: the ``torch.ops.iresnet``
operators of ``lipswish.cpp`` on the CPU, compiled elsewhere; their eager form is arranged around
torch's fused SiLU kernels, ``silu(z) = z sigmoid(z)``), and ``beta x`` is recomputed there rather
than stored. With ``z = beta x``, ``s = sigmoid(z)``, ``silu'(z) = s (1 + z (1 - s))`` and
``silu''(z) = s (1 - s) (2 + z (1 - 2s))``:

    f(x)         = silu(z) / (1.1 beta)
    f'(x)        = silu'(z) / 1.1
    df/dbeta     = x^2 s (1 - s) / 1.1
    f''(x)       = beta silu''(z) / 1.1
    df'/dbeta    = x silu''(z) / 1.1

``beta`` is broadcastable to ``x`` (e.g. ``(1, C, 1, 1)``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from iresnet.ops.engine import engine_will_reach, gradient_node
from iresnet.ops.extension import load_extension
from iresnet.ops.fusion import fused

LIPSWISH_SCALE = 1.1


@functools.cache
def _operators() -> bool:
    """Builds and loads ``lipswish.cpp`` once, and tells ``torch.compile`` its operators' shapes."""
    if not load_extension("lipswish"):
        return False
    # Output shapes without running the kernels (fake tensors), for torch.compile and torch.export.
    torch.library.register_fake("iresnet::lipswish_and_slope")(lambda x, beta: (torch.empty_like(x), torch.empty_like(x)))
    torch.library.register_fake("iresnet::lipswish_beta_grad")(lambda grad, x, beta: torch.empty_like(beta))
    torch.library.register_fake("iresnet::lipswish_slope_grads")(
        lambda gg_x, grad, x, beta: (torch.empty_like(x), torch.empty_like(x), torch.empty_like(beta))
    )
    return True


def _operator(name: str) -> Callable[[], Callable | None]:
    """The ``torch.ops.iresnet`` operator ``name``, or None where the C++ kernels are not available."""
    return lambda: getattr(torch.ops.iresnet, name) if _operators() else None


def lipswish_inference(x: Tensor, beta: Tensor) -> Tensor:
    """``f(x) = silu(beta x) / (1.1 beta)``, without storing anything for a backward pass."""
    return F.silu(x * beta).mul_(1 / (LIPSWISH_SCALE * beta))


@fused(_operator("lipswish_and_slope"))
def lipswish_and_slope(x: Tensor, beta: Tensor) -> tuple[Tensor, Tensor]:
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


@fused(_operator("lipswish_beta_grad"))
def lipswish_beta_grad(grad: Tensor, x: Tensor, beta: Tensor) -> Tensor:
    """``sum grad df/dbeta``, summed to ``beta``'s shape."""
    _, slope = _sigmoid_slope(x * beta)
    return (grad * slope).mul_(x).mul_(x).sum_to_size(beta.shape) / LIPSWISH_SCALE


@fused(_operator("lipswish_slope_grads"))
def lipswish_slope_grads(gg_x: Tensor, grad: Tensor, x: Tensor, beta: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(d/dgrad, d/dx, d/dbeta)`` of ``<gg_x, grad f'(x)>``: ``gg_x f'(x)``, ``gg_x grad f''(x)``
    and the sum of ``gg_x grad df'/dbeta`` to ``beta``'s shape (``f'`` recomputed from ``x``: one
    pass instead of another over the stored slope)."""
    z = x * beta
    s, slope = _sigmoid_slope(z)
    d_grad = torch.ops.aten.silu_backward(gg_x / LIPSWISH_SCALE, z)
    t = (gg_x * grad).mul_(_silu_curvature(z, s, slope))
    return d_grad, t * (beta / LIPSWISH_SCALE), (t * x).sum_to_size(beta.shape) / LIPSWISH_SCALE


def _kernel(kernel: Callable, fused: bool) -> Callable:
    """A :func:`fused` kernel, or its eager formula."""
    return kernel if fused else kernel.eager  # type: ignore[attr-defined]


class _LipSwishFunction(torch.autograd.Function):
    """``f(x)`` with ``f'`` stored and the derivatives of the module docstring."""

    @staticmethod
    def forward(ctx, x: Tensor, beta: Tensor, fused: bool = True) -> Tensor:
        out, slope = _kernel(lipswish_and_slope, fused)(x, beta)
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
        return grad_x, grad_beta, None


def _lipswish_grads(grad, x, beta, slope, want_beta: bool, fused: bool) -> tuple[Tensor, Tensor | None]:
    """``(grad f'(x), sum grad df/dbeta)``, the latter None unless ``want_beta``."""
    grad_beta = _kernel(lipswish_beta_grad, fused)(grad, x, beta) if want_beta else None
    return grad * slope, grad_beta


class _LipSwishBackward(torch.autograd.Function):
    """:func:`_lipswish_grads`, differentiable once more."""

    @staticmethod
    def forward(ctx, grad, x, beta, slope, want_beta: bool, fused: bool):
        ctx.save_for_backward(grad, x, beta)
        ctx.want_beta, ctx.fused = want_beta, fused
        return _lipswish_grads(grad, x, beta, slope, want_beta, fused)

    @staticmethod
    @once_differentiable
    def backward(ctx, gg_x: Tensor, gg_beta: Tensor | None):
        grad, x, beta = ctx.saved_tensors
        d_grad, d_x, d_beta = _kernel(lipswish_slope_grads, ctx.fused)(gg_x, grad, x, beta)
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


def lipswish(x: Tensor, beta: Tensor, fused: bool) -> Tensor:
    """``f(x)`` for ``x: (B, C, *)`` and ``beta`` broadcastable to it.

    Under no-grad (e.g. fixed-point inversion) nothing is stored for a backward pass. Otherwise
    ``f'`` is stored, and with ``fused`` the formulas run as one loop each; callers fuse in
    training only, where hundreds of steps repay a first build or compilation, while an
    evaluation's time goes to the series' products, which fusion cannot help.
    """
    if not torch.is_grad_enabled():
        return lipswish_inference(x, beta)
    return _LipSwishFunction.apply(x, beta, fused)
