"""Exact log-determinants from dense per-sample Jacobians (cost ``O(D)`` backward passes + ``O(D^3)``).

Meant for low-dimensional flows and as the ground truth of the stochastic estimators.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from iresnet.logdet._autograd import call_net, graph_scope, requires_graph, traced_products, tracked_input, vjp


def batch_jacobian(out: Tensor, x: Tensor, create_graph: bool) -> Tensor:
    """Per-sample Jacobians ``J[b, i, j] = d out[b].flat[i] / d x[b].flat[j]``: ``(B, D_out, D_in)``.

    Row ``i`` is the VJP with the basis vector ``e_i``; all rows come from one batched
    backward pass. Assumes samples do not interact inside the network.
    """
    rows = vjp(out, x, _basis(out), create_graph=create_graph)
    return rows.flatten(2).transpose(0, 1)


def _basis(out: Tensor) -> Tensor:
    """The basis vectors ``e_i`` of one sample's values, for every sample: ``(D, *out.shape)``."""
    batch, d_out = out.shape[0], out[0].numel()
    basis = torch.eye(d_out, dtype=out.dtype, device=out.device)
    return basis.unsqueeze(1).expand(d_out, batch, d_out).reshape(d_out, *out.shape)


def _check_square(x: Tensor, out: Tensor) -> None:
    if out[0].numel() != x[0].numel():
        raise ValueError(
            f"the Jacobian must be square: fn maps {x[0].numel()} to {out[0].numel()} "
            "values per sample; the log-determinant needs fn(x) to have as many values as x."
        )


def _logabsdet(jac: Tensor, add_identity: bool) -> Tensor:
    """``log|det(J)|`` (``log|det(I + J)|`` if ``add_identity``) of ``jac: (B, D, D)``."""
    if add_identity:
        jac = jac + torch.eye(jac.shape[-1], dtype=jac.dtype, device=jac.device)
    return torch.linalg.slogdet(jac).logabsdet


def _jacobian_logdet(
    fn: Callable[..., Tensor], x: Tensor, add_identity: bool, context: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """``fn(x)`` and ``log|det(J)|`` per sample, with ``J = d fn/dx`` (``+ I`` if ``add_identity``);
    with a context, ``fn(x, context)`` and its Jacobian in ``x``."""
    if torch.compiler.is_compiling():
        # The Jacobian's rows (or, under torch.export, its columns: the same determinant).
        out, product = traced_products(fn, x, context)
        _check_square(x, out)
        jac = product(_basis(out)).flatten(2).transpose(0, 1)
        return out, _logabsdet(jac, add_identity)
    keep_graph = requires_graph(fn, x, context)
    with graph_scope():
        x_in = tracked_input(x, keep_graph)
        out = call_net(fn, x_in, context)
        _check_square(x_in, out)
        jac = batch_jacobian(out, x_in, create_graph=keep_graph)
        logdet = _logabsdet(jac, add_identity)
    if not keep_graph:
        out, logdet = out.detach(), logdet.detach()
    return out, logdet


def exact_logdet(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """``log|det(d fn/dx)|`` for every sample of ``x: (B, ...)``: returns ``(B,)``.

    Differentiable when grad mode is on; detached under ``torch.no_grad()``.
    """
    return _jacobian_logdet(fn, x, add_identity=False)[1]


class ExactLogDet:
    """Estimator object computing ``log det(I + J_g(x))`` exactly from the dense Jacobian.

    Called as ``est(net, x, training, context=None) -> (g(x), logdet)`` with ``logdet: (B,)`` (the
    Jacobian in ``x``, for ``net(x, context)`` when a context is given); ``training``
    is ignored (the value is exact either way). Differentiable (through the Jacobian) when
    grad mode is on, so a low-dimensional flow can be trained with it.
    """

    def __init__(self) -> None:
        self.last_logdet: Tensor | None = None

    def __call__(
        self, net: nn.Module, x: Tensor, training: bool, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        g_x, logdet = _jacobian_logdet(net, x, add_identity=True, context=context)
        self.last_logdet = logdet.detach()
        return g_x, logdet

    def __repr__(self) -> str:
        return "ExactLogDet()"
