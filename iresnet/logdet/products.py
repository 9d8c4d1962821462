r"""Jacobian products of a sequential branch by its layers' own adjoints, without autograd.

The series estimators take many products ``u J`` at one point ``x``. For a branch that is an
``nn.Sequential`` of LipSwish activations and zero-padded convolutions or linear layers (the
presets' branches), one forward pass keeps each activation's slope ``f'(h)`` and each layer's
weight, and a product runs the layers backwards:

    u <- conv_transpose(u, W)   (u W for a linear layer),      u <- u * f'(h)   (in place).

Autograd would record a graph for the products, run its engine once per product and allocate every
intermediate gradient; here each product allocates only its layers' outputs. This is the estimators'
graph-free path: evaluation, and the values and Neumann rows of the memory-efficient forward in
training (whose backward :mod:`iresnet.logdet.surrogate` takes by the layers' derivatives). Any
other branch returns None and the callers take the products with autograd.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from iresnet.lipschitz.activations import LipSwish
from iresnet.ops.conv import Conv2d, conv_forward, conv_input_grad
from iresnet.ops.lipswish import LIPSWISH_SCALE, lipswish_slope

# An adjoint step: the map u -> u * slope (in place) or u -> u J_layer.
_Adjoint = Callable[[Tensor], Tensor]


def _plain(layer: nn.Module) -> bool:
    """No hooks but forward pre-hooks on the input alone (spectral normalization's size check),
    which :func:`run_pre_hooks` runs."""
    return not (layer._forward_hooks or layer._backward_hooks or layer._forward_pre_hooks_with_kwargs)


def run_pre_hooks(layer: nn.Module, h: Tensor) -> Tensor:
    """``layer``'s forward pre-hooks on its input ``h``, as a call of ``layer`` runs them."""
    for hook in layer._forward_pre_hooks.values():
        result = hook(layer, (h,))
        if result is not None:
            h = result[0] if isinstance(result, tuple) else result
    return h


def _supported(layer: nn.Module) -> bool:
    if not _plain(layer):
        return False
    if type(layer) is LipSwish:
        return True
    if isinstance(layer, nn.Conv2d):
        return (
            type(layer).forward is nn.Conv2d.forward
            and type(layer)._conv_forward in (nn.Conv2d._conv_forward, Conv2d._conv_forward)
            and layer.groups == 1
            and layer.padding_mode == "zeros"
            and not isinstance(layer.padding, str)
        )
    return isinstance(layer, nn.Linear) and type(layer).forward is nn.Linear.forward


def channel_view(beta: Tensor, ndim: int) -> Tensor:
    """LipSwish's ``beta: (C,)`` or ``(1,)`` shaped to broadcast along dim 1 of an ``ndim``-dim map."""
    return beta.view(-1, *([1] * (ndim - 2)))


def layer_tensors(layer: nn.Module) -> tuple[Tensor | None, ...]:
    """The tensors a supported layer computes with, read as a call reads them (a parametrized
    weight through its parametrization): LipSwish's ``(beta,)``, a linear map's ``(weight, bias)``."""
    return (layer.beta,) if type(layer) is LipSwish else (layer.weight, layer.bias)


def _lipswish(h: Tensor, beta: Tensor) -> tuple[Tensor, _Adjoint]:
    beta = channel_view(beta, h.ndim)
    z = h * beta
    slope = lipswish_slope(z)
    out = F.silu(z, inplace=True).mul_(1 / (LIPSWISH_SCALE * beta))
    return out, lambda u: u.mul_(slope)


def _conv(layer: nn.Conv2d, h: Tensor, weight: Tensor, bias: Tensor | None) -> tuple[Tensor, _Adjoint]:
    conf = (layer.stride, layer.padding, layer.dilation)
    return conv_forward(h, weight, bias, conf), lambda u: conv_input_grad(u, h, weight, conf)


def _linear(h: Tensor, weight: Tensor, bias: Tensor | None) -> tuple[Tensor, _Adjoint]:
    return F.linear(h, weight, bias), lambda u: u @ weight


def full_precision(x: Tensor) -> torch.autocast:
    """Autocast off on ``x``'s device: the layers' adjoints run in the dtype of their inputs, which
    autocast would mix (a bfloat16 convolution output beside float32 rows)."""
    return torch.autocast(x.device.type, enabled=False)


def sequential_supported(net: nn.Module) -> bool:
    """Whether ``net`` is an ``nn.Sequential`` of supported layers (LipSwish, zero-padded
    ``groups=1`` convolutions, linear layers; parametrized ones included) without hooks."""
    return isinstance(net, nn.Sequential) and all(_supported(layer) for layer in net)


def sequential_products(
    net: nn.Module, x: Tensor, used: Sequence[tuple[Tensor | None, ...]] | None = None
) -> tuple[Tensor, Callable[[Tensor], Tensor]] | None:
    """``(g(x), product)`` with ``product: (P, B, ...) -> (P, B, ...)``, ``u[p] -> u[p] J`` for the
    per-sample Jacobian ``J`` of ``g = net`` at ``x: (B, ...)``; None unless
    :func:`sequential_supported`.

    Runs without a graph and without autocast (in ``x``'s dtype): nothing is differentiable. The
    layers compute with ``used[i]`` (:func:`layer_tensors` of layer ``i``) if given; otherwise
    each parametrized weight is read once, as a forward pass of ``net`` reads it (spectral
    normalization's power iteration runs in training mode, as there).
    """
    if not sequential_supported(net):
        return None
    adjoints: list[_Adjoint] = []
    h = x
    with torch.no_grad(), full_precision(x):
        for i, layer in enumerate(net):
            h = run_pre_hooks(layer, h)
            tensors = layer_tensors(layer) if used is None else used[i]
            if type(layer) is LipSwish:
                h, adjoint = _lipswish(h, *tensors)
            elif isinstance(layer, nn.Conv2d):
                h, adjoint = _conv(layer, h, *tensors)
            else:
                h, adjoint = _linear(h, *tensors)
            adjoints.append(adjoint)
    # The first adjoint of a product scales in place: it must not write into the caller's rows.
    copy_rows = type(net[-1]) is LipSwish

    def product(u: Tensor) -> Tensor:
        rows = []
        with torch.no_grad(), full_precision(x):
            for row in u:
                row = row.clone() if copy_rows else row
                for adjoint in reversed(adjoints):
                    row = adjoint(row)
                rows.append(row)
        return rows[0].unsqueeze(0) if len(rows) == 1 else torch.stack(rows)

    return h, product
