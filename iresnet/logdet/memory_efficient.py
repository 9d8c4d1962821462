"""Gradient-in-forward evaluation: the series' graph never outlives the forward pass.

Inside ``forward`` the per-sample estimate ``logdet(x): (B,)`` is computed and
``d sum_b logdet_b / d(x, theta)`` is taken at once; only the graph of the single
evaluation ``g = net(x)`` is kept (for ``g``'s own backward). ``backward`` then scales the
stored gradients by the incoming ``dL/dlogdet``. Because samples do not interact, the
``x``-gradient can be scaled per sample; the parameter gradient is a sum over the batch and
can only be scaled by one scalar, so ``dL/dlogdet`` must be uniform across the batch (true
for the usual mean or sum of log-likelihoods).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from iresnet.logdet._autograd import graph_scope

# (g, x) -> (value, objective): the estimate and the tensor whose gradient is wanted.
SeriesFn = Callable[[Tensor, Tensor], tuple[Tensor, Tensor | None]]


def _add(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    if a is None:
        return b
    return a if b is None else a + b


def _uniform_scale(grad_logdet: Tensor) -> Tensor:
    """The common value of ``dL/dlogdet`` over the batch; raise if it is not common."""
    scale = grad_logdet.mean()
    if not torch.allclose(grad_logdet, scale.expand_as(grad_logdet), rtol=1e-5, atol=0.0):
        raise RuntimeError(
            "memory_efficient=True can only scale the parameter gradient of the per-sample "
            "log-determinant by one number, but dL/dlogdet differs across the batch "
            f"(min {grad_logdet.min().item():.3g}, max {grad_logdet.max().item():.3g}). "
            "Reduce the loss with a mean or sum over samples, or use memory_efficient=False."
        )
    return scale


class _MemoryEfficientLogDet(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, series: SeriesFn, net: nn.Module, x: Tensor, *params: Tensor):
        with graph_scope():
            x_in = x.detach().requires_grad_(True)
            g = net(x_in)
            value, objective = series(g, x_in)
            grads = torch.autograd.grad(
                objective.sum(), (x_in, *params), retain_graph=True, allow_unused=True
            )
        # Only g's graph survives: value/objective (and the series graph) die with this frame.
        ctx.g, ctx.x, ctx.params, ctx.logdet_grads = g, x_in, params, grads
        return g.detach(), value.detach()

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_g: Tensor, grad_logdet: Tensor):
        with torch.enable_grad():
            g_grads = torch.autograd.grad(
                ctx.g, (ctx.x, *ctx.params), grad_g, allow_unused=True
            )
        logdet_grad_x, *logdet_grad_params = ctx.logdet_grads
        per_sample = grad_logdet.view(-1, *[1] * (ctx.x.dim() - 1))
        grad_x = _add(g_grads[0], None if logdet_grad_x is None else logdet_grad_x * per_sample)
        grad_params = list(g_grads[1:])
        if any(grad is not None for grad in logdet_grad_params):
            scale = _uniform_scale(grad_logdet)
            grad_params = [
                _add(dg, None if dl is None else dl * scale)
                for dg, dl in zip(grad_params, logdet_grad_params)
            ]
        ctx.g = ctx.x = ctx.logdet_grads = None  # free g's graph and the stored gradients
        return (None, None, grad_x, *grad_params)


def memory_efficient_logdet(series: SeriesFn, net: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """``(g(x), logdet)`` through :class:`_MemoryEfficientLogDet`; differentiable w.r.t. ``x``
    and the parameters of ``net`` that require grad.

    ``series(g, x)`` must return ``(value, objective)`` with ``objective`` differentiable.
    """
    params = [p for p in net.parameters() if p.requires_grad]
    return _MemoryEfficientLogDet.apply(series, net, x, *params)
