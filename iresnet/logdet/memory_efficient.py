"""Memory-efficient evaluation: no graph of ``g`` or of the series outlives its own step.

``forward`` evaluates ``g = net(x)`` and the series chunk by chunk, each chunk's graph freed
as soon as its VJPs are taken, and keeps only ``x``, the probes ``v`` and, for the Neumann
gradient, the row ``w`` (all the size of ``x``). ``backward`` recomputes ``g`` per chunk and
takes one merged backward pass of

    <dL/dg, g(x)> + sum_b dL/dlogdet_b * s_b,

where ``s`` is the Neumann surrogate ``w^T J v`` (or, for ``grad="backprop"``, the series
itself rebuilt with a graph). One pass gives ``g``'s own gradient and the log-det gradient
together, per sample, so any per-sample weighting of the log-dets is exact. Peak memory is
that of one chunk, whatever the number of terms, the batch size or the depth of the model.
For the Neumann gradient of a sequential branch of LipSwish and linear maps (the presets'),
:class:`_SequentialLogDet` takes the same gradient from the layers' own derivatives
(:mod:`iresnet.logdet.surrogate`), without autograd, in sweeps smaller than a chunk. It reads the
layers' tensors once (spectral normalization's ``W / sigma``, LipSwish's ``beta``), takes them as
inputs and gives their gradients, which autograd takes on to the parameters in the same backward
pass: nothing is read or differentiated again.

Recomputing ``g`` must give the forward's function exactly. Parametrized weights (spectral
normalization) update their power-iteration state in training mode, so every evaluation after
the first runs with the parametrizations in eval mode, which reads the updated state without
changing it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from iresnet.lipschitz.spectral_norm import spectral_norm_modules
from iresnet.logdet._autograd import batch_chunks, call_net, frozen_parametrizations
from iresnet.logdet.products import full_precision, layer_tensors, sequential_supported
from iresnet.logdet.series import chunked_series_terms, neumann_surrogate, series_terms
from iresnet.logdet.surrogate import sequential_surrogate_backward


class _MemoryEfficientLogDet(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, net: nn.Module, x: Tensor, context: Tensor | None, probes: Tensor,
                coeffs: Sequence[float], grad: str, chunk_size: int | None, *params: Tensor):  # fmt: skip
        neumann = grad == "neumann"
        g, value, rows = chunked_series_terms(net, x, probes, coeffs, chunk_size, neumann, context)
        ctx.save_for_backward(x, probes, context)
        # Intermediates, kept per chunk: concatenating would lose their memory layout.
        ctx.rows = rows
        ctx.net, ctx.coeffs, ctx.chunk_size, ctx.params = net, coeffs, chunk_size, params
        return g, value

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_g: Tensor, grad_logdet: Tensor):
        x, probes, context = ctx.saved_tensors
        net, params, rows = ctx.net, ctx.params, ctx.rows
        ctx.rows = None
        grad_x = torch.empty_like(x) if ctx.needs_input_grad[1] else None
        # A context that requires grad (features of a network trained jointly) gets its gradient
        # through the branch's value and the log-det surrogate, at fixed x.
        grad_context = torch.zeros_like(context) if ctx.needs_input_grad[2] else None
        grad_params: list[Tensor | None] = [None] * len(params)
        with torch.enable_grad(), frozen_parametrizations(net):
            for i, part in enumerate(batch_chunks(len(x), ctx.chunk_size)):
                x_in = x[part].detach().requires_grad_(True)
                c_in = None if context is None else context[part].detach().requires_grad_(grad_context is not None)
                g = call_net(net, x_in, c_in)
                if rows is None:
                    objective, _ = series_terms(g, x_in, probes[:, part], ctx.coeffs, create_graph=True)
                else:
                    objective = neumann_surrogate(g, x_in, rows[i], probes[:, part])
                inputs = [*([x_in] if grad_x is not None else []), *([c_in] if grad_context is not None else [])]
                grads = torch.autograd.grad(
                    (g, objective), (*inputs, *params), (grad_g[part], grad_logdet[part]), allow_unused=True
                )
                if grad_x is not None:
                    grad_x[part], grads = grads[0], grads[1:]
                if grad_context is not None:
                    if grads[0] is not None:
                        grad_context[part] = grads[0]
                    grads = grads[1:]
                grad_params = [
                    total if new is None else new if total is None else total.add_(new)
                    for total, new in zip(grad_params, grads)
                ]
        return (None, grad_x, grad_context, None, None, None, None, *grad_params)


class _SequentialLogDet(torch.autograd.Function):
    """:class:`_MemoryEfficientLogDet` with the Neumann gradient of a sequential branch, w.r.t. ``x``
    and ``tensors``: the layers' :func:`~iresnet.logdet.products.layer_tensors`, flattened
    (``sizes[i]`` of them for layer ``i``)."""

    @staticmethod
    def forward(ctx: Any, net: nn.Sequential, x: Tensor, probes: Tensor, coeffs: Sequence[float],
                chunk_size: int | None, sizes: Sequence[int], *tensors: Tensor | None):  # fmt: skip
        used = _per_layer(tensors, sizes)
        g, value, rows = chunked_series_terms(net, x, probes, coeffs, chunk_size, neumann=True, used=used)
        ctx.save_for_backward(x, probes, *tensors)
        ctx.rows, ctx.net, ctx.chunk_size, ctx.sizes = rows, net, chunk_size, sizes
        return g, value

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_g: Tensor, grad_logdet: Tensor):
        x, probes, *tensors = ctx.saved_tensors
        rows, ctx.rows = ctx.rows, None
        grad_x, grads = sequential_surrogate_backward(
            ctx.net, _per_layer(tensors, ctx.sizes), x, probes, rows, batch_chunks(len(x), ctx.chunk_size),
            grad_g, grad_logdet, need_x=ctx.needs_input_grad[1],
        )  # fmt: skip
        return (None, grad_x, None, None, None, None, *grads)


def _per_layer(tensors: Sequence[Tensor | None], sizes: Sequence[int]) -> list[tuple[Tensor | None, ...]]:
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    return [tuple(tensors[start : start + size]) for start, size in zip(starts, sizes)]


def _spectral_norms_ready(net: nn.Module) -> bool:
    """Whether every spectral-normalized layer of ``net`` knows its input size: a lazy one learns it
    in its first forward pass, before which its weight cannot be read."""
    return all(sn.initialized for _, _, sn in spectral_norm_modules(net))


def memory_efficient_logdet(
    net: nn.Module,
    x: Tensor,
    probes: Tensor,
    coeffs: Sequence[float],
    grad: str,
    chunk_size: int | None,
    context: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """``(g(x), logdet)`` through :class:`_MemoryEfficientLogDet`; differentiable w.r.t. ``x``,
    the context (if it requires grad) and the parameters of ``net`` that require grad.

    ``x: (B, ...)``; ``probes: (P, B, ...)``; ``coeffs`` the term weights; ``grad`` the
    gradient mode; ``chunk_size`` samples per evaluation of ``net`` (``None``: all at once);
    ``context``: one row per sample, or None for ``net(x)``.
    """
    if grad == "neumann" and context is None and sequential_supported(net) and _spectral_norms_ready(net):
        # Read once, as a forward pass reads them (one power-iteration step in training mode), with
        # their graphs to the parameters, and in full precision, as the products compute.
        with full_precision(x):
            used = [layer_tensors(layer) for layer in net]
        sizes = [len(tensors) for tensors in used]
        return _SequentialLogDet.apply(net, x, probes, coeffs, chunk_size, sizes, *(t for ts in used for t in ts))
    params = [p for p in net.parameters() if p.requires_grad]
    return _MemoryEfficientLogDet.apply(net, x, context, probes, coeffs, grad, chunk_size, *params)
