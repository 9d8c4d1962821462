r"""``nn.Conv2d`` with a second derivative built from the fast first-order convolution kernels.

The Neumann log-det gradient differentiates a vector-Jacobian product of the residual branch,
so every convolution is differentiated twice. PyTorch's generic double backward of a
convolution computes the weight term as a convolution of transposed activations with a kernel
as large as the feature map (28x28 on MNIST), which oneDNN runs slowly and only after copying
both operands out of the channels-last layout: measured at 20% of a training step. For
``conv(x, W)`` with output gradient ``o`` the first backward gives

    gx = conv_transpose(o, W),      gW = <o, conv(x, .)>,      gb = sum(o),

and all three are bilinear, so their derivatives in directions ``(gg_x, gg_W, gg_b)`` are

    d o = conv(gg_x, W) + conv(x, gg_W) + gg_b,
    d x = conv_transpose(o, gg_W),
    d W = <o, conv(gg_x, .)>,

each one call of ``F.conv2d`` or ``aten.convolution_backward``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from iresnet.lipschitz._engine import engine_will_reach, gradient_node


def _conv_backward(grad_out: Tensor, x: Tensor, weight: Tensor, conf: tuple, mask: list[bool]):
    stride, padding, dilation = conf
    return torch.ops.aten.convolution_backward(
        grad_out, x, weight, [weight.shape[0]] if mask[2] else None,
        stride, padding, dilation, False, [0, 0], 1, mask,
    )  # fmt: skip


class _Conv2dFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, conf: tuple) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.conf = conf
        ctx.nodes = [gradient_node(t) if t is not None else None for t in (x, weight, bias)]
        return F.conv2d(x, weight, bias, *conf)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor):
        x, weight = ctx.saved_tensors
        mask = [engine_will_reach(node) for node in ctx.nodes]
        grads = _Conv2dBackward.apply(grad_out, x, weight, ctx.conf, mask)
        return (*grads, None)


class _Conv2dBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, grad_out: Tensor, x: Tensor, weight: Tensor, conf: tuple, mask: list[bool]):
        ctx.save_for_backward(grad_out, x, weight)
        ctx.conf = conf
        return tuple(_conv_backward(grad_out, x, weight, conf, mask))

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, gg_x: Tensor | None, gg_w: Tensor | None, gg_b: Tensor | None):
        grad_out, x, weight = ctx.saved_tensors
        conf = ctx.conf
        need_o, need_x, need_w = ctx.needs_input_grad[:3]
        d_o = d_x = d_w = None
        if need_o:
            terms = []
            if gg_x is not None:
                terms.append(F.conv2d(gg_x, weight, None, *conf))
            if gg_w is not None:
                terms.append(F.conv2d(x, gg_w, None, *conf))
            if gg_b is not None:
                terms.append(gg_b.view(1, -1, 1, 1).expand_as(grad_out))
            d_o = sum(terms[1:], terms[0]) if terms else None
        if need_x and gg_w is not None:
            d_x = _conv_backward(grad_out, x, gg_w, conf, [True, False, False])[0]
        if need_w and gg_x is not None:
            d_w = _conv_backward(grad_out, gg_x, weight, conf, [False, True, False])[1]
        return d_o, d_x, d_w, None, None


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` (zero padding, ``groups=1``) whose double backward uses the first-order
    convolution kernels; see the module docstring. Same parameters, same results."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.groups != 1 or self.padding_mode != "zeros" or isinstance(self.padding, str):
            raise ValueError(
                "iresnet.lipschitz.Conv2d supports groups=1 and explicit zero padding only; "
                f"got groups={self.groups}, padding={self.padding!r}, padding_mode={self.padding_mode!r}. "
                "Use torch.nn.Conv2d for other cases."
            )

    def _conv_forward(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return _Conv2dFunction.apply(x, weight, bias, (self.stride, self.padding, self.dilation))
