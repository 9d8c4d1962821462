r"""The gradient of the Neumann surrogate for a sequential branch: a tangent sweep and its adjoint.

The memory-efficient estimator's backward (:mod:`iresnet.logdet.memory_efficient`) differentiates

    L = sum_b [ <a_b, g(x_b)> + c_b mean_p <w_pb, J_b v_pb> ]

w.r.t. ``x`` and the branch's parameters, where ``a = dL/dg``, ``c = dL/dlogdet`` per sample, ``w``
the Neumann rows and ``v`` the probes. For a branch ``g = L_m o ... o L_1`` that
:func:`~iresnet.logdet.products.sequential_supported` accepts, this module takes that gradient
without autograd. The forward sweep keeps each layer's input ``h`` and tangent ``t`` (the
forward-mode product ``J v`` so far: ``t <- W t`` through a linear map, ``t <- f'(h) t`` through
LipSwish); the adjoint sweep runs back with ``a`` (for ``h``) and ``t_bar = c w / P`` (for ``t``):

    linear map W:   dW += a h^T + t_bar t^T,   db += sum a,   a <- W^T a,   t_bar <- W^T t_bar,
    LipSwish f:     u = silu''(z) t t_bar,     a <- f'(h) a + beta u / 1.1,  t_bar <- f'(h) t_bar,
                    dbeta += sum h (a h s (1 - s) + u) / 1.1,

with ``z = beta h``, ``s = sigmoid(z)``, ``f'(h) = silu'(z) / 1.1`` and
``silu''(z) = s (1 - s) (2 + z (1 - 2 s))`` (``df/dbeta = h^2 s (1 - s) / 1.1``,
``df'/dbeta = h silu''(z) / 1.1``, ``df'/dh = beta silu''(z) / 1.1``). The gradients are taken
w.r.t. the tensors the layers compute with (spectral normalization's ``W / sigma``,
``beta = softplus(raw)``); autograd takes them on to the parameters through the parametrizations'
own graph.

Autograd would recompute the branch with a graph, take the surrogate's VJP with another, and
differentiate both: each elementwise step then writes a fresh map. Here every elementwise step
after the forward sweep works in place on maps of the sweep's own, and each sweep takes as many
samples as keep its maps within :data:`SWEEP_BYTES`, so they stay in the cache and the process
does not return and re-fault their memory between sweeps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from iresnet.lipschitz.activations import LipSwish
from iresnet.logdet._autograd import batch_chunks
from iresnet.logdet.products import channel_view, full_precision, run_pre_hooks
from iresnet.ops.conv import conv_forward, conv_input_grad, conv_output_size, conv_weight_grad
from iresnet.ops.lipswish import LIPSWISH_SCALE, lipswish_slope

# The maps one sweep keeps, per call: about a typical L3 cache (32 MiB on the 2-core benchmark
# machine). Sweeps of 8 to 16 images at 28x28 with 64 hidden channels made the protocol's training
# step 13-15% faster than sweeps of the forward's whole chunks of 32 images.
SWEEP_BYTES = 32 * 2**20

# Per layer: LipSwish's (beta,), a linear map's (weight, bias), as the layer uses them
# (products.layer_tensors).
_Used = tuple[Tensor | None, ...]


def kept_per_sample(net: nn.Sequential, x: Tensor, n_probes: int) -> int:
    """Elements a sweep keeps per sample of ``x``: ``z, s, f'`` and ``P`` tangents at each
    LipSwish, the input and ``P`` tangents at each linear map, for ``P = n_probes``."""
    channels, size = x.shape[1], x.shape[2:]
    kept = 0
    for layer in net:
        if type(layer) is LipSwish:
            kept += (3 + n_probes) * channels * math.prod(size)
        elif isinstance(layer, nn.Conv2d):
            kept += (1 + n_probes) * channels * math.prod(size)
            size = conv_output_size(size, layer.kernel_size, (layer.stride, layer.padding, layer.dilation))
            channels = layer.out_channels
        else:
            kept += (1 + n_probes) * channels
            channels = layer.out_features
    return kept


def sweep_samples(net: nn.Sequential, x: Tensor, n_probes: int) -> int:
    """Samples per sweep: the most whose kept maps fit :data:`SWEEP_BYTES` (one at least)."""
    return max(1, SWEEP_BYTES // max(1, kept_per_sample(net, x, n_probes) * x.element_size()))


class _KeptMaps:
    """The maps a sweep keeps, cut from one buffer that every sweep of a call reuses: its memory
    stays in place and in the cache from one sweep to the next."""

    def __init__(self, numel: int, like: Tensor) -> None:
        self.buffer = like.new_empty(numel)
        self.used = 0

    def like(self, t: Tensor) -> Tensor:
        """A map with ``t``'s shape and memory format (convolutions pick channels-last for
        channels-last weights, and a map in the other format would cost a copy at each), or a
        fresh one once the buffer is spent or for another layout."""
        start, end = self.used, self.used + t.numel()
        channels_last = t.ndim == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)
        if end > self.buffer.numel() or not (t.is_contiguous() or channels_last):
            return torch.empty_like(t)
        self.used = end
        flat = self.buffer[start:end]
        if channels_last:
            n, c, h, w = t.shape
            return flat.view(n, h, w, c).permute(0, 3, 1, 2)
        return flat.view(t.shape)


def _tangent_sweep(net: nn.Sequential, used: Sequence[_Used], maps: _KeptMaps, x: Tensor,
                   probes: Tensor) -> list[tuple[Tensor, ...]]:  # fmt: skip
    """The forward sweep from ``x: (B, ...)`` with tangents ``probes: (P, B, ...)``: per layer,
    what its adjoint needs, ``(z, s, f', t)`` for LipSwish and ``(h, t)`` for a linear map (``t``
    with the probes stacked along the batch)."""
    n_probes, batch = probes.shape[:2]
    h, t = x, probes.reshape(n_probes * batch, *probes.shape[2:])
    kept: list[tuple[Tensor, ...]] = []
    for i, (layer, tensors) in enumerate(zip(net, used)):
        h = run_pre_hooks(layer, h)
        if type(layer) is LipSwish:
            beta = channel_view(tensors[0].detach(), h.ndim)
            z = torch.mul(h, beta, out=maps.like(h))
            s = torch.sigmoid(z, out=maps.like(z))
            slope = lipswish_slope(z, out=maps.like(z))
            if i:  # a layer's output: into the kept maps, so that its own memory is freed at once
                t = maps.like(t).copy_(t)
            kept.append((z, s, slope, t))
            if i == len(net) - 1:  # the branch's output, which the adjoint sweep does not use
                break
            h = torch.mul(z, s, out=maps.like(z)).mul_(1 / (LIPSWISH_SCALE * beta))
            t_out = maps.like(t).view(n_probes, batch, *t.shape[1:])
            t = torch.mul(t.view(n_probes, batch, *t.shape[1:]), slope, out=t_out).view_as(t)
        else:
            weight, bias = (None if p is None else p.detach() for p in tensors)
            kept.append((h, t))
            if i == len(net) - 1:
                break
            if isinstance(layer, nn.Conv2d):
                conf = (layer.stride, layer.padding, layer.dilation)
                h, t = conv_forward(h, weight, bias, conf), conv_forward(t, weight, None, conf)
            else:
                h, t = F.linear(h, weight, bias), F.linear(t, weight)
    return kept


def _adjoint_sweep(net: nn.Sequential, used: Sequence[_Used], kept: list[tuple[Tensor, ...]], a: Tensor,
                   t_bar: Tensor, n_probes: int, need_x: bool) -> tuple[Tensor | None, list[_Used]]:  # fmt: skip
    """The sweep back from ``a = dL/dg: (B, ...)`` and ``t_bar: (P * B, ...)``: ``dL/dx`` (None
    unless ``need_x``) and, per layer, the gradients w.r.t. its used tensors. Overwrites the maps
    in ``kept`` that the sweep owns."""
    grad_g = a  # the caller's, until a layer writes a map of the sweep's own

    def probe_view(t: Tensor) -> Tensor:
        return t.view(n_probes, -1, *t.shape[1:])

    grads: list[_Used] = [()] * len(net)
    for i in reversed(range(len(net))):
        layer, first = net[i], i == 0
        if type(layer) is LipSwish:
            z, s, slope, t = kept[i]
            beta_used = used[i][0].detach()
            beta = channel_view(beta_used, z.ndim)
            u = (probe_view(t) * probe_view(t_bar)).sum(0) if n_probes > 1 else t * t_bar
            torch.ops.aten.sigmoid_backward.grad_input(u, s, grad_input=u)  # t t_bar s (1 - s)
            # a h s (1 - s) = (a z s (1 - s)) / beta; y holds a z s (1 - s).
            y = a * z
            torch.ops.aten.sigmoid_backward.grad_input(y, s, grad_input=y)
            u.mul_(s.mul_(-2).add_(1).mul_(z).add_(2))  # silu''(z) t t_bar; s now holds the bracket
            # sum h (a h s (1 - s) + u) = sum z (y / beta + u) / beta, summed per channel
            dims = [0, *range(2, z.ndim)]
            grad_beta = z.mul_(y.div_(beta).add_(u)).sum(dims).div_(LIPSWISH_SCALE * beta_used)
            grads[i] = (grad_beta.sum().view(1) if beta_used.numel() == 1 else grad_beta,)
            if not first or need_x:
                a = (a.mul_(slope) if a is not grad_g else a * slope).addcmul_(u, beta, value=1 / LIPSWISH_SCALE)
            if not first:
                probe_view(t_bar).mul_(slope)
            continue
        h, t = kept[i]
        weight, bias = used[i]
        weight = weight.detach()
        if isinstance(layer, nn.Conv2d):
            conf = (layer.stride, layer.padding, layer.dilation)
            grad_w = conv_weight_grad(a, h, weight, conf).add_(conv_weight_grad(t_bar, t, weight, conf))
            grad_b = None if bias is None else a.sum((0, 2, 3))
            if not first:
                t_bar = conv_input_grad(t_bar, t, weight, conf)
            if not first or need_x:
                a = conv_input_grad(a, h, weight, conf)
        else:
            grad_w = a.t() @ h + t_bar.t() @ t
            grad_b = None if bias is None else a.sum(0)
            if not first:
                t_bar = t_bar @ weight
            if not first or need_x:
                a = a @ weight
        grads[i] = (grad_w, grad_b)
    return (a if need_x else None), grads


def sequential_surrogate_backward(
    net: nn.Sequential,
    used: Sequence[_Used],
    x: Tensor,
    probes: Tensor,
    rows: Sequence[Tensor],
    chunks: Sequence[slice],
    grad_g: Tensor,
    grad_logdet: Tensor,
    need_x: bool,
) -> tuple[Tensor | None, list[Tensor | None]]:
    """``(dL/dx, dL/dused)`` for ``L`` of the module docstring; ``used[i]`` the tensors layer ``i``
    computes with (:func:`~iresnet.logdet.products.layer_tensors`), ``x, grad_g: (B, ...)``,
    ``probes: (P, B, ...)``, ``grad_logdet: (B,)``; ``rows[k]: (P, |chunks[k]|, ...)`` the
    Neumann rows of the forward's chunk ``chunks[k]``. ``dL/dx`` is None unless ``need_x``;
    ``dL/dused`` follows ``used`` flattened, None for a tensor that is None or does not require grad.

    Leaves its arguments unchanged. Runs in ``x``'s dtype, as autograd's backward of the branch
    would: rows and gradients that a forward under autocast left in a lower precision are cast to it."""
    rows, grad_g, grad_logdet = [r.to(x.dtype) for r in rows], grad_g.to(x.dtype), grad_logdet.to(x.dtype)
    n_probes = probes.shape[0]
    size = sweep_samples(net, x, n_probes)
    maps = _KeptMaps(min(size, len(x)) * kept_per_sample(net, x, n_probes), x)
    grad_x = torch.empty_like(x) if need_x else None
    totals: list[Tensor | None] | None = None  # per used tensor, summed over the sweeps
    with torch.no_grad(), full_precision(x):
        for part, part_rows in zip(chunks, rows):
            n = part_rows.shape[1]
            for sub in batch_chunks(n, math.ceil(n / math.ceil(n / size))):
                span = slice(part.start + sub.start, part.start + sub.stop)
                maps.used = 0
                kept = _tangent_sweep(net, used, maps, x[span], probes[:, span])
                weights = (grad_logdet[span] / n_probes).view(1, -1, *([1] * (x.ndim - 1)))
                t_bar = (part_rows[:, sub] * weights).flatten(0, 1)
                gx, grads = _adjoint_sweep(net, used, kept, grad_g[span], t_bar, n_probes, need_x)
                if grad_x is not None:
                    grad_x[span] = gx
                flat = [g for layer in grads for g in layer]
                totals = flat if totals is None else [t if g is None else t.add_(g) for t, g in zip(totals, flat)]
    tensors = [t for layer in used for t in layer]
    return grad_x, [
        g if t is not None and t.requires_grad else None for t, g in zip(tensors, totals or [None] * len(tensors))
    ]
