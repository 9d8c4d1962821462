r"""LipSwish with its slope stored: a vector-Jacobian product w.r.t. ``x`` is one multiply.

``f(x) = x sigmoid(beta x) / 1.1`` (the activation, and why it is 1-Lipschitz:
:mod:`iresnet.lipschitz.activations`). With ``z = beta x`` and ``silu(z) = z sigmoid(z)``:

    f(x)     = silu(z) / (1.1 beta),
    f'(x)    = silu'(z) / 1.1,
    df/dbeta = x^2 s (1 - s) / 1.1,      s = sigmoid(z).

The log-det estimators take many vector-Jacobian products w.r.t. ``x`` per step. In training the
forward pass therefore stores the slope ``f'(x)``, computed in one pass by ATen's ``silu_backward``
(:class:`_Slope`, differentiable in ``x`` and ``beta``), and the output's gradient is split, as in
:mod:`iresnet.ops.conv`, into two autograd nodes of its own: ``x``'s (``grad f'(x)``) and
``beta``'s (its sum over the other dimensions). Autograd runs ``beta``'s node only when a
backward pass asks for ``beta``. Both are plain tensor operations on saved tensors that keep their
graph, so the gradients are differentiable once more (the Neumann and memory-efficient gradients
differentiate ``grad f'(x)`` w.r.t. ``x`` and ``beta`` through :class:`_Slope`'s backward).
Without a graph to build the formula runs alone, and ``torch.compile`` fuses it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

LIPSWISH_SCALE = 1.1


def lipswish(x: Tensor, beta: Tensor) -> Tensor:
    """``f(x)`` for ``x: (B, C, *)`` and positive ``beta`` broadcastable to it (e.g. ``(1, C, 1, 1)``)."""
    if torch.compiler.is_compiling():
        # The traced log-det estimators take their products with torch.func, which does not see the
        # tensors the taps pass inside tuples (wrong products); the compiler fuses and derives the formula.
        return F.silu(x * beta) / (LIPSWISH_SCALE * beta)
    if not (torch.is_grad_enabled() and (x.requires_grad or beta.requires_grad)):
        return F.silu(x * beta, inplace=True).mul_(1 / (LIPSWISH_SCALE * beta))  # no graph: in place
    z = x * beta
    slope = _Slope.apply(z)
    input_tap = _InputGradient.apply(x, (slope,))
    beta_tap = _BetaGradient.apply(beta, (x, z))
    return _LipSwish.apply(input_tap, beta_tap, (z, beta))


def lipswish_slope(z: Tensor, out: Tensor | None = None) -> Tensor:
    """``f'(x) = silu'(z) / 1.1`` at ``z = beta x``, in one pass (ATen's ``silu_backward``), into
    ``out`` if given."""
    scale = z.new_full((), 1 / LIPSWISH_SCALE).expand_as(z)
    if out is None:
        return torch.ops.aten.silu_backward(scale, z)
    return torch.ops.aten.silu_backward.grad_input(scale, z, grad_input=out)


class _LipSwish(torch.autograd.Function):
    """``f(x) = silu(z) / (1.1 beta)`` of ``operands = (z, beta)``, whose output gradient goes on,
    unchanged, to the two taps :class:`_InputGradient` and :class:`_BetaGradient`."""

    @staticmethod
    def forward(ctx: Any, input_tap: Tensor, beta_tap: Tensor, operands: tuple[Tensor, Tensor]) -> Tensor:
        z, beta = operands
        return F.silu(z).mul_(1 / (LIPSWISH_SCALE * beta))

    @staticmethod
    def backward(ctx: Any, grad: Tensor):
        return grad, grad, None


class _Slope(torch.autograd.Function):
    """``f'(x) = silu'(z) / 1.1`` in one pass (ATen's ``silu_backward``), differentiable by
    ``silu''(z) / 1.1 = s (1 - s) (2 + z (1 - 2 s)) / 1.1`` in differentiable ATen operations."""

    @staticmethod
    def forward(ctx: Any, z: Tensor) -> Tensor:
        ctx.save_for_backward(z)
        return lipswish_slope(z)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (z,) = ctx.saved_tensors
        s = torch.sigmoid(z)
        # Five passes: sigmoid_backward(grad, s) = grad s (1 - s), and the bracket by one addcmul.
        bracket = torch.addcmul(z.new_full((), 2 / LIPSWISH_SCALE), z, torch.sub(1, s, alpha=2), value=1 / LIPSWISH_SCALE)
        return torch.ops.aten.sigmoid_backward(grad, s) * bracket


class _InputGradient(torch.autograd.Function):
    """A tap of :class:`_LipSwish`: its backward is ``grad f'(x)``. The slope comes in a tuple,
    saved rather than an input: no edge to it, whose backward autograd would run on zeros."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, saved: tuple[Tensor]) -> Tensor:
        (slope,) = saved
        ctx.save_for_backward(slope)
        return slope.new_zeros(()).expand_as(slope)

    @staticmethod
    def backward(ctx: Any, grad: Tensor):
        (slope,) = ctx.saved_tensors
        return grad * slope, None


class _BetaGradient(torch.autograd.Function):
    """A tap of :class:`_LipSwish`: its backward is ``beta``'s gradient, ``sum grad df/dbeta``;
    ``(x, z)`` come in a tuple, saved rather than inputs, so the gradient stays differentiable in
    them (``z = beta x`` is the tensor :class:`_Slope` keeps, not another copy)."""

    @staticmethod
    def forward(ctx: Any, beta: Tensor, saved: tuple[Tensor, Tensor]) -> Tensor:
        x, z = saved
        ctx.save_for_backward(x, z, beta)
        return z.new_zeros(()).expand_as(z)

    @staticmethod
    def backward(ctx: Any, grad: Tensor):
        x, z, beta = ctx.saved_tensors
        # grad x^2 s (1 - s) = grad x z s (1 - s) / beta: four passes over the map before the sum.
        terms = torch.ops.aten.sigmoid_backward(grad * x * z, torch.sigmoid(z))
        return terms.sum_to_size(beta.shape) / (LIPSWISH_SCALE * beta), None
