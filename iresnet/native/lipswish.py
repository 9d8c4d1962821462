"""LipSwish's elementwise formulas as native loops over CPU tensors (``lipswish.cpp``).

Each function matches its PyTorch formula in :mod:`iresnet.lipschitz.activations` and returns
None where it does not apply, for the caller to run that formula instead: no native library,
tensors off the CPU or not float32/float64, or a memory layout other than contiguous or
channels-last shared by all tensor arguments. ``beta`` holds one value, or one per channel
(dim 1 of ``x``), broadcastable to ``x``.
"""

from __future__ import annotations

import ctypes
import math

import torch
from torch import Tensor

from iresnet.native.build import load_library

_SUFFIX = {torch.float32: "f32", torch.float64: "f64"}


def _layout(x: Tensor, beta: Tensor, *others: Tensor) -> tuple[int, int, int] | None:
    """``(outer, channels, inner)`` such that ``x``'s memory is ``[outer, channels, inner]`` with
    ``beta[c]`` for channel ``c``, or None where the native loops do not apply."""
    tensors = (x, beta, *others)
    if any(t.device.type != "cpu" or t.dtype != x.dtype for t in tensors) or x.dtype not in _SUFFIX:
        return None
    if any(t.shape != x.shape or t.stride() != x.stride() for t in others) or not beta.is_contiguous():
        return None
    channels_last = x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last)
    if beta.ndim > x.ndim or not (x.is_contiguous() or channels_last):
        return None
    if beta.numel() == 1:
        return 1, 1, x.numel()
    if x.ndim < 2:
        return None
    # beta broadcast to x: its size along x's dim 1, ones elsewhere
    aligned = (1,) * (x.ndim - beta.ndim) + tuple(beta.shape)
    channels = x.shape[1]
    if aligned != (1, channels, *([1] * (x.ndim - 2))):
        return None
    inner = 1 if channels_last else math.prod(x.shape[2:])
    return x.numel() // (channels * inner), channels, inner


def _function(name: str, x: Tensor):
    library = load_library("lipswish")
    return None if library is None else getattr(library, f"iresnet_lipswish_{name}_{_SUFFIX[x.dtype]}")


def _pointers(*tensors: Tensor) -> list[ctypes.c_void_p]:
    return [ctypes.c_void_p(t.data_ptr()) for t in tensors]


def _sums_to_beta(sums: Tensor, beta: Tensor) -> Tensor:
    return sums.to(beta.dtype).view(beta.shape)


def lipswish_and_slope(x: Tensor, beta: Tensor) -> tuple[Tensor, Tensor] | None:
    """``(f(x), f'(x))``, laid out as ``x``."""
    layout = _layout(x, beta)
    function = None if layout is None else _function("forward", x)
    if function is None:
        return None
    out, slope = torch.empty_like(x), torch.empty_like(x)
    function(*_pointers(x, beta, out, slope), *map(ctypes.c_int64, layout))
    return out, slope


def lipswish_beta_grad(grad: Tensor, x: Tensor, beta: Tensor) -> Tensor | None:
    """``sum grad df/dbeta``, summed to ``beta``'s shape (in float64, then cast)."""
    layout = _layout(x, beta, grad)
    function = None if layout is None else _function("beta_grad", x)
    if function is None:
        return None
    sums = torch.zeros(beta.numel(), dtype=torch.float64)
    function(*_pointers(grad, x, beta, sums), *map(ctypes.c_int64, layout))
    return _sums_to_beta(sums, beta)


def lipswish_slope_grads(gg_x: Tensor, grad: Tensor, x: Tensor, beta: Tensor) -> tuple[Tensor, Tensor] | None:
    """``(gg_x grad f''(x), sum gg_x grad df'/dbeta)``: the first laid out as ``x``, the second
    summed to ``beta``'s shape."""
    layout = _layout(x, beta, gg_x, grad)
    function = None if layout is None else _function("slope_grads", x)
    if function is None:
        return None
    d_x, sums = torch.empty_like(x), torch.zeros(beta.numel(), dtype=torch.float64)
    function(*_pointers(gg_x, grad, x, beta, d_x, sums), *map(ctypes.c_int64, layout))
    return d_x, _sums_to_beta(sums, beta)
